"""The ``scientists`` group: its members see the dashboard, the API's science endpoints and exports."""

from django.db import migrations

# Frozen here on purpose (migrations must not change when the code does); the same name as
# rgzlabel.science.roles.SCIENTISTS_GROUP.
GROUP = "scientists"


def create_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.get_or_create(name=GROUP)


def delete_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [("auth", "0012_alter_user_first_name_max_length")]
    operations = [migrations.RunPython(create_group, delete_group)]
