from django.db import migrations, models


class Migration(migrations.Migration):
    """One built-in image per name (a migration of its own: PostgreSQL makes no index in
    the transaction that deleted the duplicates, whose foreign-key checks still wait)."""

    dependencies = [
        ("clusters", "0006_merge_duplicate_built_in_images"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="containerimage",
            constraint=models.UniqueConstraint(
                condition=models.Q(("deleted_at", None), ("organization", None)),
                fields=("name",),
                name="built_in_image_name",
            ),
        ),
    ]
