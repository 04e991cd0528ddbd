from django.contrib import admin, messages

from rgzlabel.learning.classifiers import pin_classifier, unpin_classifier
from rgzlabel.learning.jobs import request_cancel, rerun_job
from rgzlabel.learning.models import ClassifierVersion, EmbeddingSet, EncoderVersion, Job, LoopSettings, QueuePolicy


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "state", "progress", "message", "triggered_by", "created_at", "finished_at")
    list_filter = ("kind", "state")
    actions = ["cancel", "run_again"]

    # Jobs are made by create_job (the trigger page, beat, the chain), which queues them for a
    # worker and keeps singleton kinds single; a row added or edited here would reach no worker
    # and block its kind. Admins cancel and re-run through the actions, which use the services.
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Cancel the selected jobs (running ones stop at their next step)")
    def cancel(self, request, queryset):
        cancelled = sum(request_cancel(job) for job in queryset)
        self.message_user(request, f"Asked {cancelled} job(s) to stop.")

    @admin.action(description="Run the selected finished jobs again")
    def run_again(self, request, queryset):
        for job in queryset:
            try:
                new = rerun_job(job, user=request.user)
            except ValueError as exc:
                self.message_user(request, str(exc), level=messages.ERROR)
            else:
                self.message_user(request, f"Queued job {new.pk} (a re-run of {job.pk}).")


@admin.register(ClassifierVersion)
class ClassifierVersionAdmin(admin.ModelAdmin):
    list_display = ("id", "n_labels", "is_active", "is_pinned", "promotion", "promotion_reason", "created_at")
    readonly_fields = ("is_active", "is_pinned", "promotion", "promotion_reason", "promoted_at")
    actions = ["promote", "unpin"]

    @admin.action(description="Make the selected classifier active and pin it (roll back or forward)")
    def promote(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one classifier.", level=messages.ERROR)
            return
        try:
            pin_classifier(queryset.get())
        except ValueError as exc:
            self.message_user(request, str(exc), level=messages.ERROR)

    @admin.action(description="Unpin the selected classifiers (retrains may replace them again)")
    def unpin(self, request, queryset):
        for classifier in queryset:
            unpin_classifier(classifier)


admin.site.register(EncoderVersion)
admin.site.register(EmbeddingSet)
admin.site.register(QueuePolicy)
admin.site.register(LoopSettings)
