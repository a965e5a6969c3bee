"""Drop the usage records' single-column index on ``api_key``.

``usage_key_created`` (api_key, created_at) already serves every lookup by key (its first
column), and the second index cost SQLite one more index entry per admitted request. Dropped
by name on both databases: Django's own AlterField would copy the whole table on SQLite and
leaves the index in place on PostgreSQL.
"""

import django.db.models.deletion
from django.db import migrations, models

INDEX = "billing_usagerecord_api_key_id_4ed5f4fb"


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0004_usage_record_owner_router_instance"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="usagerecord",
                    name="api_key",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="usage_records",
                        to="billing.apikey",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{INDEX}"',
                    reverse_sql=f'CREATE INDEX "{INDEX}" ON "billing_usagerecord" ("api_key_id")',
                ),
            ],
        ),
    ]
