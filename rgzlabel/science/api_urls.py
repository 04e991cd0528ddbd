"""URLs of the REST API, its OpenAPI schema and its documentation (mounted at ``api/``)."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from rgzlabel.science import api

app_name = "api"

router = DefaultRouter()
router.register("sources", api.SourceViewSet, basename="source")
router.register("consensus", api.ConsensusViewSet, basename="consensus")
router.register("classifications", api.ClassificationViewSet, basename="classification")
router.register("encoders", api.EncoderVersionViewSet, basename="encoder")
router.register("embedding-sets", api.EmbeddingSetViewSet, basename="embedding-set")
router.register("classifiers", api.ClassifierVersionViewSet, basename="classifier")
router.register("jobs", api.JobViewSet, basename="job")

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("auth/token/", api.ObtainTokenView.as_view(), name="token"),
    path("exports/", api.ExportLinksView.as_view(), name="exports"),
    path("", include(router.urls)),
]
