from django.contrib import admin

from rgzlabel.labelling.models import Classification, Workflow


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "retire_after", "is_active")


@admin.register(Classification)
class ClassificationAdmin(admin.ModelAdmin):
    list_display = ("source", "volunteer", "label", "workflow", "created_at")
    list_filter = ("label", "workflow")
    raw_id_fields = ("source", "volunteer")
