"""The REST API and the export downloads: parse, authorise, call one service, respond.

Who sees what: volunteers read and create only their own classifications; scientists and
admins also read sources, consensus, model versions and exports (consensus and predictions
are kept from volunteers so that they cannot bias their votes); jobs are for admins only.
"""

from __future__ import annotations

from django.http import StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.decorators import action
from rest_framework.exceptions import Throttled
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from rgzlabel.catalog.models import Source
from rgzlabel.labelling import throttle
from rgzlabel.labelling.models import Classification, Subject
from rgzlabel.labelling.services import (
    RateLimited,
    VoteRejected,
    default_workflow,
    next_subject,
    record_classification,
)
from rgzlabel.labelling.views import volunteer_of
from rgzlabel.learning.models import ClassifierVersion, EmbeddingSet, EncoderVersion, Job
from rgzlabel.science import exports, serializers
from rgzlabel.science.permissions import IsScientist
from rgzlabel.science.queries import SourceFilters, filter_by_consensus, find_sources


class DetailSerializerMixin:
    """Use ``detail_serializer_class`` for one object (e.g. with its long log), the short one in lists."""

    detail_serializer_class: type | None = None

    def get_serializer_class(self):
        if self.action == "retrieve" and self.detail_serializer_class is not None:
            return self.detail_serializer_class
        return super().get_serializer_class()


def _validated(serializer_class: type, request: Request):
    """The request's query parameters checked by ``serializer_class``; a 400 naming each bad field."""
    params = serializer_class(data=request.query_params)
    params.is_valid(raise_exception=True)
    return params


# --- sources and consensus -----------------------------------------------------------------------
@extend_schema_view(list=extend_schema(parameters=[serializers.SourceFilterSerializer]))
class SourceViewSet(viewsets.ReadOnlyModelViewSet):
    """Sources with position, catalogue names, consensus and the active classifier's prediction.

    Filters: ``label``, ``min_confidence`` and a cone (``ra``, ``dec`` in degrees, ``radius``
    in arcsec; results nearest first).
    """

    serializer_class = serializers.SourceSerializer
    permission_classes = [IsScientist]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no database
            return Source.objects.none()
        filters = (
            _validated(serializers.SourceFilterSerializer, self.request).filters()
            if self.action == "list"
            else SourceFilters()
        )
        return find_sources(default_workflow(), filters).prefetch_related("provenances")


@extend_schema_view(list=extend_schema(parameters=[serializers.SubjectFilterSerializer]))
class ConsensusViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The volunteers' consensus per subject of a workflow (the main one by default)."""

    serializer_class = serializers.SubjectSerializer
    permission_classes = [IsScientist]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Subject.objects.none()
        params = _validated(serializers.SubjectFilterSerializer, self.request)
        subjects = Subject.objects.filter(workflow=params.validated_data.get("workflow") or default_workflow())
        retired = params.validated_data.get("retired")
        if retired is not None:
            subjects = subjects.filter(retired_at__isnull=not retired)
        return filter_by_consensus(subjects, params.filters()).select_related("source", "workflow").order_by("pk")


# --- votes ---------------------------------------------------------------------------------------------
class ClassificationViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """The requesting volunteer's own votes; a new vote goes through the labelling service."""

    serializer_class = serializers.ClassificationSerializer
    permission_classes = [IsAuthenticated]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Classification.objects.none()
        return (
            Classification.objects.filter(volunteer=self.request.user)
            .select_related("source", "workflow")
            .order_by("-created_at", "-pk")
        )

    @extend_schema(
        parameters=[serializers.NextQuerySerializer],
        responses=serializers.NextSerializer,
        description="Serve the next source to label; it is held for the requesting volunteer, who may then vote "
        "on it. Votes are taken only on served sources.",
    )
    @action(detail=False, methods=["get"], url_path="next")
    def next(self, request: Request) -> Response:
        params = _validated(serializers.NextQuerySerializer, request)
        served = next_subject(volunteer_of(request), params.validated_data.get("workflow") or default_workflow())
        if served is None:
            return Response({"source": None})
        source = served.subject.source
        return Response(
            {
                "source": {
                    "id": source.pk,
                    "name": source.name,
                    "ra_deg": source.ra_deg,
                    "dec_deg": source.dec_deg,
                    "thumbnail": request.build_absolute_uri(reverse("catalog:thumbnail", args=[source.pk])),
                }
            }
        )

    @extend_schema(
        request=serializers.NewClassificationSerializer,
        responses={201: serializers.ClassificationSerializer, 200: serializers.ClassificationSerializer},
        description="Record a vote on a source served by `next`. 201 for a new vote; 200 when it repeats the "
        "volunteer's stored vote.",
    )
    def create(self, request: Request, *args, **kwargs) -> Response:
        vote = serializers.NewClassificationSerializer(data=request.data)
        vote.is_valid(raise_exception=True)
        workflow = vote.validated_data.get("workflow") or default_workflow()
        try:
            outcome = record_classification(
                volunteer_of(request), vote.validated_data["source"].pk, vote.validated_data["label"], workflow
            )
        except RateLimited as exc:
            raise Throttled(detail=str(exc)) from exc
        except VoteRejected as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(
            serializers.ClassificationSerializer(outcome.classification).data,
            status=status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK,
        )


class ObtainTokenView(ObtainAuthToken):
    """A token for a username and password; failed attempts are limited per account and per client (429)."""

    def post(self, request: Request, *args, **kwargs) -> Response:
        try:
            username = request.data.get("username", "") if hasattr(request.data, "get") else ""
            with throttle.login_attempt(request, str(username)):
                return super().post(request, *args, **kwargs)
        except throttle.Throttled as exc:
            raise Throttled(wait=exc.retry_after_s, detail=str(exc)) from exc


# --- model versions and jobs -----------------------------------------------------------------------------
class EncoderVersionViewSet(DetailSerializerMixin, viewsets.ReadOnlyModelViewSet):
    """Pretrained encoders; one encoder's training curves in its detail."""

    queryset = EncoderVersion.objects.all()
    serializer_class = serializers.EncoderVersionSerializer
    detail_serializer_class = serializers.EncoderVersionDetailSerializer
    permission_classes = [IsScientist]


class EmbeddingSetViewSet(viewsets.ReadOnlyModelViewSet):
    """Embedding sets (one matrix per encoder version); the active one feeds the queue and classifier."""

    queryset = EmbeddingSet.objects.all()
    serializer_class = serializers.EmbeddingSetSerializer
    permission_classes = [IsScientist]


class ClassifierVersionViewSet(viewsets.ReadOnlyModelViewSet):
    """Classifier versions with their evaluation metrics; ``is_active`` marks the promoted one."""

    queryset = ClassifierVersion.objects.all()
    serializer_class = serializers.ClassifierVersionSerializer
    permission_classes = [IsScientist]


class JobViewSet(DetailSerializerMixin, viewsets.ReadOnlyModelViewSet):
    """Background jobs (admins only); one job's log and traceback in its detail."""

    queryset = Job.objects.select_related("triggered_by")
    serializer_class = serializers.JobSerializer
    detail_serializer_class = serializers.JobDetailSerializer
    permission_classes = [IsAdminUser]


# --- exports ----------------------------------------------------------------------------------------------
class ExportLinksView(APIView):
    """Where to download each export, in each format."""

    permission_classes = [IsScientist]

    @extend_schema(responses=serializers.ExportIndexSerializer)
    def get(self, request: Request) -> Response:
        return Response(
            {
                dataset: {
                    file_format: request.build_absolute_uri(reverse(f"exports:{dataset}-{file_format}"))
                    for file_format in exports.FORMATS
                }
                for dataset in exports.DATASETS
            }
        )


class FirstRendererNegotiation(BaseContentNegotiation):
    """Downloads answer in their own format whatever ``Accept`` says; errors in JSON."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


_DOWNLOAD_RESPONSES = {(200, media_type): OpenApiTypes.BINARY for _, media_type in exports.FORMATS.values()}


class ExportView(APIView):
    """Base of the downloads: ``file_format`` is set per URL (see ``export_urls``)."""

    permission_classes = [IsScientist]
    content_negotiation_class = FirstRendererNegotiation
    file_format = "csv"

    def download(self, export: exports.Export):
        """Every format streamed, memory bounded by a chunk of rows (``rgzlabel.science.exports``)."""
        media_type = exports.FORMATS[self.file_format][1]
        if self.file_format == "csv":
            response = StreamingHttpResponse(exports.iter_csv(export), content_type=media_type)
        else:
            response = StreamingHttpResponse(exports.iter_table(export, self.file_format), content_type=media_type)
        response["Content-Disposition"] = f'attachment; filename="{exports.file_name(export, self.file_format)}"'
        return response


class SourcesExportView(ExportView):
    """Per source: position, consensus, the active classifier's prediction and probabilities."""

    @extend_schema(parameters=[serializers.SourceFilterSerializer], responses=_DOWNLOAD_RESPONSES)
    def get(self, request: Request):
        filters = _validated(serializers.SourceFilterSerializer, request).filters()
        workflow = default_workflow()
        return self.download(exports.export_sources(find_sources(workflow, filters), workflow))


class ClassificationsExportView(ExportView):
    """One row per vote, volunteers pseudonymous, for re-analysis of the consensus."""

    @extend_schema(responses=_DOWNLOAD_RESPONSES)
    def get(self, request: Request):
        return self.download(exports.export_classifications())


class FlagsExportView(ExportView):
    """One row per flag: the sources volunteers marked as interesting, with their notes."""

    @extend_schema(responses=_DOWNLOAD_RESPONSES)
    def get(self, request: Request):
        return self.download(exports.export_flags())
