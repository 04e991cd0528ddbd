"""REST API representations, and validation of the API's query parameters."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from rgzlabel.catalog.models import Source
from rgzlabel.catalog.search import DEC_RANGE, MAX_RADIUS_ARCSEC, RA_RANGE
from rgzlabel.labelling.models import Classification, Subject, Workflow
from rgzlabel.learning.models import ClassifierVersion, EmbeddingSet, EncoderVersion, Job
from rgzlabel.science.predictions import predict_sources
from rgzlabel.science.queries import SourceFilters


# --- query parameters ----------------------------------------------------------------------------
class ConsensusFilterSerializer(serializers.Serializer):
    label = serializers.CharField(required=False, max_length=32, help_text="consensus (majority) label, e.g. FRII")
    min_confidence = serializers.FloatField(
        required=False, min_value=0.0, max_value=1.0, help_text="minimum majority share of the votes, 0..1"
    )

    def filters(self) -> SourceFilters:
        """The validated parameters as filters (call after ``is_valid``)."""
        return SourceFilters(
            label=self.validated_data.get("label"), min_confidence=self.validated_data.get("min_confidence")
        )


class SourceFilterSerializer(ConsensusFilterSerializer):
    """Filters of the source list and export; a cone needs ``ra``, ``dec`` and ``radius`` together."""

    ra = serializers.FloatField(
        required=False,
        min_value=RA_RANGE[0],
        max_value=RA_RANGE[1],
        help_text="cone centre, J2000 RA in degrees [0, 360)",
    )
    dec = serializers.FloatField(
        required=False, min_value=DEC_RANGE[0], max_value=DEC_RANGE[1], help_text="cone centre, J2000 Dec in degrees"
    )
    radius = serializers.FloatField(
        required=False, min_value=0.0, max_value=MAX_RADIUS_ARCSEC, help_text="cone radius in arcsec (at most 10 deg)"
    )

    def validate_ra(self, value: float) -> float:
        if value >= RA_RANGE[1]:
            raise serializers.ValidationError("ra must be below 360 degrees (use 0 instead of 360)")
        return value

    def validate_radius(self, value: float) -> float:
        if value <= 0:
            raise serializers.ValidationError("radius must be greater than 0 arcsec")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        cone = {"ra", "dec", "radius"}
        given = cone & attrs.keys()
        missing = sorted(cone - given) if given else []
        if missing:
            message = f"a cone search needs ra, dec and radius together; {', '.join(missing)} missing"
            raise serializers.ValidationError(dict.fromkeys(missing, message))
        return attrs

    def filters(self) -> SourceFilters:
        data = self.validated_data
        return SourceFilters(
            label=data.get("label"),
            min_confidence=data.get("min_confidence"),
            ra_deg=data.get("ra"),
            dec_deg=data.get("dec"),
            radius_arcsec=data.get("radius"),
        )


class SubjectFilterSerializer(ConsensusFilterSerializer):
    workflow = serializers.SlugRelatedField(
        slug_field="slug",
        queryset=Workflow.objects.all(),
        required=False,
        help_text="workflow slug (default: the main one)",
    )
    retired = serializers.BooleanField(
        required=False, allow_null=True, default=None, help_text="only retired (true) or open (false) subjects"
    )


# --- sources -------------------------------------------------------------------------------------
class SourceListSerializer(serializers.ListSerializer):
    """Predicts a whole page in one call instead of loading the classifier per source."""

    def to_representation(self, data) -> list[dict[str, Any]]:
        sources = list(data.all() if hasattr(data, "all") else data)
        self.child.predictions = predict_sources([source.pk for source in sources])
        return super().to_representation(sources)


class ConsensusSerializer(serializers.Serializer):
    n_votes = serializers.IntegerField(source="vote_count", allow_null=True)
    retired = serializers.SerializerMethodField()
    label = serializers.CharField(source="consensus_label", allow_null=True)
    confidence = serializers.FloatField(source="consensus_confidence", allow_null=True)
    weighted_label = serializers.CharField(allow_null=True)
    weighted_confidence = serializers.FloatField(allow_null=True)
    retire_reason = serializers.CharField(allow_null=True, help_text="why the subject retired ('' while open)")
    assisted_label = serializers.CharField(
        allow_null=True, help_text="class volunteers and classifier agreed on (machine-assisted retirement)"
    )
    assisted_confidence = serializers.FloatField(allow_null=True)

    def get_retired(self, row) -> bool:
        return row.retired_at is not None


class PredictionSerializer(serializers.Serializer):
    classifier = serializers.IntegerField()
    label = serializers.CharField()
    probabilities = serializers.DictField(child=serializers.FloatField())


class SourceSerializer(serializers.ModelSerializer):
    names = serializers.SerializerMethodField(help_text="the source's keys in the catalogues it came from")
    consensus = ConsensusSerializer(source="*", read_only=True)
    prediction = serializers.SerializerMethodField(help_text="the active classifier's probabilities, if any")
    distance_arcsec = serializers.SerializerMethodField(help_text="distance from the cone centre (cone searches)")

    class Meta:
        model = Source
        fields = ["id", "name", "ra_deg", "dec_deg", "survey", "angular_size_arcsec", "names", "consensus",
                  "prediction", "distance_arcsec"]  # fmt: skip
        list_serializer_class = SourceListSerializer

    @extend_schema_field(
        serializers.ListField(child=serializers.DictField(child=serializers.CharField(allow_blank=True)))
    )
    def get_names(self, source: Source) -> list[dict[str, str]]:
        return [
            {"dataset": p.dataset, "id": p.external_id, "catalogue_label": p.catalogue_label}
            for p in source.provenances.all()
        ]

    @extend_schema_field(PredictionSerializer(allow_null=True))
    def get_prediction(self, source: Source) -> dict[str, Any] | None:
        predictions = getattr(self, "predictions", None) if self.parent is not None else predict_sources([source.pk])
        return predictions.as_dict(source.pk) if predictions else None

    @extend_schema_field(OpenApiTypes.FLOAT)
    def get_distance_arcsec(self, source: Source) -> float | None:
        return getattr(source, "distance_arcsec", None)


class SubjectSerializer(serializers.ModelSerializer):
    source_name = serializers.CharField(source="source.name", read_only=True)
    workflow = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Subject
        fields = ["source", "source_name", "workflow", "vote_count", "retired_at", "retire_reason", "consensus_label",
                  "consensus_confidence", "weighted_label", "weighted_confidence", "assisted_label",
                  "assisted_confidence"]  # fmt: skip


# --- votes -----------------------------------------------------------------------------------------
class ClassificationSerializer(serializers.ModelSerializer):
    source_name = serializers.CharField(source="source.name", read_only=True)
    workflow = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Classification
        fields = ["id", "source", "source_name", "workflow", "label", "is_gold", "created_at"]
        read_only_fields = fields


class NewClassificationSerializer(serializers.Serializer):
    """A vote to record; the labelling service checks the label against the workflow's classes."""

    source = serializers.PrimaryKeyRelatedField(queryset=Source.objects.all(), help_text="source id")
    label = serializers.CharField(max_length=32, help_text="one of the workflow's class keys, e.g. FRII")
    workflow = serializers.SlugRelatedField(
        slug_field="slug",
        queryset=Workflow.objects.filter(is_active=True),
        required=False,
        help_text="workflow slug (default: the main one)",
    )


class NextQuerySerializer(serializers.Serializer):
    workflow = serializers.SlugRelatedField(
        slug_field="slug",
        queryset=Workflow.objects.filter(is_active=True),
        required=False,
        help_text="workflow slug (default: the main one)",
    )


class ServedSourceSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    ra_deg = serializers.FloatField()
    dec_deg = serializers.FloatField()
    thumbnail = serializers.CharField(help_text="URL of the source's image")


class NextSerializer(serializers.Serializer):
    source = ServedSourceSerializer(allow_null=True, help_text="null when nothing is left to label")


# --- model versions and jobs -----------------------------------------------------------------------
class EncoderVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = EncoderVersion
        fields = ["id", "name", "architecture", "config", "data_hash", "n_images", "code_version", "job", "created_at"]


class EncoderVersionDetailSerializer(EncoderVersionSerializer):
    class Meta(EncoderVersionSerializer.Meta):
        fields = [*EncoderVersionSerializer.Meta.fields, "curves"]


class EmbeddingSetSerializer(serializers.ModelSerializer):
    class Meta:
        model = EmbeddingSet
        fields = ["id", "encoder", "method", "views", "n_sources", "dim", "is_active", "job", "created_at"]


class ClassifierVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ClassifierVersion
        fields = ["id", "embedding_set", "classes", "n_labels", "labels_until", "metrics", "is_active", "promoted_at",
                  "job", "created_at"]  # fmt: skip


class JobSerializer(serializers.ModelSerializer):
    triggered_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    duration_s = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = Job
        fields = ["id", "kind", "state", "queue", "params", "progress", "message", "metrics", "result", "warnings",
                  "error", "cancel_requested", "triggered_by", "created_at", "started_at", "heartbeat_at",
                  "finished_at", "duration_s"]  # fmt: skip


class JobDetailSerializer(JobSerializer):
    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "log", "traceback"]


class ExportLinksSerializer(serializers.Serializer):
    csv = serializers.URLField()
    votable = serializers.URLField()
    fits = serializers.URLField()


class ExportIndexSerializer(serializers.Serializer):
    sources = ExportLinksSerializer()
    classifications = ExportLinksSerializer()
    flags = ExportLinksSerializer()
