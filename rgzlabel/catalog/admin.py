from django.contrib import admin

from rgzlabel.catalog.models import Provenance, Source


class ProvenanceInline(admin.TabularInline):
    model = Provenance
    extra = 0
    fields = ("dataset", "external_id", "catalogue_label", "label_code", "split", "ingested_at")
    readonly_fields = fields


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    list_display = ("name", "ra_deg", "dec_deg", "survey", "angular_size_arcsec")
    search_fields = ("name",)
    list_filter = ("survey", "provenances__dataset")
    inlines = [ProvenanceInline]
