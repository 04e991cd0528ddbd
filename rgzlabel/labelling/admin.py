from django.contrib import admin

from rgzlabel.labelling.forms import ThrottledAdminAuthenticationForm
from rgzlabel.labelling.models import Classification, GoldLabel, Subject, VolunteerProfile, Workflow
from rgzlabel.labelling.services import remove_votes

# The admin's log-in page takes the same failed-attempt limits as the site's.
admin.site.login_form = ThrottledAdminAuthenticationForm


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = (
        "name", "slug", "retire_after", "retire_on_agreement", "retire_on_margin", "expert_workflow", "is_active"
    )  # fmt: skip
    fieldsets = [
        (None, {"fields": ("name", "slug", "classes", "is_active", "experts_only")}),
        (
            "Retirement",
            {
                "fields": (
                    "retire_after",
                    "retire_on_agreement",
                    "retire_on_margin",
                    "disagreement_threshold",
                    "expert_workflow",
                )  # fmt: skip
            },
        ),
        (
            "Machine-assisted retirement",
            {
                "fields": ("machine_retire_confidence", "machine_retire_min_votes"),
                "description": "Volunteers and the active classifier agreeing can retire a subject before "
                "its vote count; never gold, never a subject drawn by random exploration.",
            },
        ),
        (
            "Consensus",
            {
                "fields": ("consensus_prior_strength", "consensus_class_prior"),
                "description": "How the Dawid-Skene consensus weighs how common each class is against the "
                "votes. A change applies to new votes at once and to every voted subject at the next refit.",
            },
        ),
        ("Serving", {"fields": ("redundancy", "undo_window_s", "exploration_share")}),
        ("Gold standard", {"fields": ("gold_rate_start", "gold_rate_min", "gold_halving")}),
    ]
    readonly_fields = ("consensus_class_prior",)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Shown, never edited here: these rows change only through the labelling services."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Subject)
class SubjectAdmin(ReadOnlyAdmin):
    """Counts, consensus and retirement are written by votes; priority by the queue refresh."""

    list_display = ("source", "workflow", "vote_count", "consensus_label", "weighted_label", "priority", "retired_at")
    list_filter = ("workflow", "retire_reason", "consensus_label")
    raw_id_fields = ("source",)


@admin.register(Classification)
class ClassificationAdmin(ReadOnlyAdmin):
    """Votes: a plain delete would leave counts, consensus and retirement stale; the action recounts."""

    list_display = ("source", "volunteer", "label", "workflow", "is_gold", "created_at")
    list_filter = ("label", "workflow", "is_gold")
    search_fields = ("volunteer__username",)
    raw_id_fields = ("source", "volunteer")
    actions = ["remove_and_recount"]

    def has_moderate_permission(self, request) -> bool:
        return request.user.has_perm("labelling.delete_classification")

    @admin.action(description="Remove the selected votes and recount their sources", permissions=["moderate"])
    def remove_and_recount(self, request, queryset):
        removed = remove_votes(list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Removed {removed} vote(s); their sources were recounted.")


@admin.register(GoldLabel)
class GoldLabelAdmin(admin.ModelAdmin):
    list_display = ("source", "workflow", "label", "feedback")
    raw_id_fields = ("source",)


@admin.register(VolunteerProfile)
class VolunteerProfileAdmin(admin.ModelAdmin):
    list_display = ("user", "is_guest", "gold_answered", "gold_correct", "tutorial_seen_at")
