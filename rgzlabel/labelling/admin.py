from django.contrib import admin

from rgzlabel.labelling.forms import ThrottledAdminAuthenticationForm
from rgzlabel.labelling.models import Classification, GoldLabel, Subject, VolunteerProfile, Workflow

# The admin's log-in page takes the same failed-attempt limits as the site's.
admin.site.login_form = ThrottledAdminAuthenticationForm


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "retire_after", "retire_on_agreement", "expert_workflow", "is_active")
    fieldsets = [
        (None, {"fields": ("name", "slug", "classes", "is_active", "experts_only")}),
        (
            "Retirement",
            {"fields": ("retire_after", "retire_on_agreement", "disagreement_threshold", "expert_workflow")},
        ),
        ("Serving", {"fields": ("redundancy", "undo_window_s")}),
        ("Gold standard", {"fields": ("gold_rate_start", "gold_rate_min", "gold_halving")}),
    ]


@admin.register(Subject)
class SubjectAdmin(admin.ModelAdmin):
    list_display = ("source", "workflow", "vote_count", "consensus_label", "weighted_label", "priority", "retired_at")
    list_filter = ("workflow", "retire_reason", "consensus_label")
    raw_id_fields = ("source",)


@admin.register(Classification)
class ClassificationAdmin(admin.ModelAdmin):
    list_display = ("source", "volunteer", "label", "workflow", "is_gold", "created_at")
    list_filter = ("label", "workflow", "is_gold")
    raw_id_fields = ("source", "volunteer")


@admin.register(GoldLabel)
class GoldLabelAdmin(admin.ModelAdmin):
    list_display = ("source", "workflow", "label", "feedback")
    raw_id_fields = ("source",)


@admin.register(VolunteerProfile)
class VolunteerProfileAdmin(admin.ModelAdmin):
    list_display = ("user", "is_guest", "gold_answered", "gold_correct", "tutorial_seen_at")
