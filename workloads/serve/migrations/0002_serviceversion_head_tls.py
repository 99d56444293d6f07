from django.db import migrations, models


class Migration(migrations.Migration):
    """Versions that exist already run on clusters booted before the serve gate spoke
    TLS (agents are installed at boot): plain HTTP. New rows default to TLS."""

    dependencies = [
        ("serve", "0001_services_and_versions"),
    ]

    operations = [
        migrations.AddField(
            model_name="serviceversion",
            name="head_tls",
            field=models.BooleanField(default=False),
        ),
        migrations.AlterField(
            model_name="serviceversion",
            name="head_tls",
            field=models.BooleanField(default=True),
        ),
    ]
