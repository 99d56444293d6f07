from django.db import migrations


def merge_duplicate_built_in_images(apps, schema_editor):
    """Built-in images (no organization) sharing a name, made by concurrent first cluster
    creates before the constraint below: the oldest stays, clusters that named another
    name it instead, and the others go, so the constraint can be made."""
    image_model = apps.get_model("clusters", "ContainerImage")
    cluster_model = apps.get_model("clusters", "Cluster")
    kept: dict[str, int] = {}
    for image in image_model.objects.filter(organization=None, deleted_at=None).order_by("pk"):
        if image.name not in kept:
            kept[image.name] = image.pk
            continue
        cluster_model.objects.filter(image_id=image.pk).update(image_id=kept[image.name])
        image.delete()


class Migration(migrations.Migration):

    dependencies = [
        ("clusters", "0005_image_validation_and_deletion"),
    ]

    operations = [
        migrations.RunPython(merge_duplicate_built_in_images, migrations.RunPython.noop),
    ]
