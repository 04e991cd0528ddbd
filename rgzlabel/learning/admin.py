from django.contrib import admin

from rgzlabel.learning.models import ClassifierVersion, EmbeddingSet, EncoderVersion, Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "state", "progress", "message", "triggered_by", "created_at", "finished_at")
    list_filter = ("kind", "state")
    readonly_fields = ("celery_task_id", "created_at", "started_at", "heartbeat_at", "finished_at", "traceback")


admin.site.register(EncoderVersion)
admin.site.register(EmbeddingSet)
admin.site.register(ClassifierVersion)
