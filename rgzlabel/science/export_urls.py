"""Export downloads (mounted at ``science/exports/``): ``<dataset>.<extension>`` per format."""

from django.urls import path

from rgzlabel.science import api
from rgzlabel.science.exports import FORMATS

app_name = "exports"

_VIEWS = {
    "sources": api.SourcesExportView,
    "classifications": api.ClassificationsExportView,
    "flags": api.FlagsExportView,
}

urlpatterns = [
    path(f"{dataset}.{extension}", view.as_view(file_format=file_format), name=f"{dataset}-{file_format}")
    for dataset, view in _VIEWS.items()
    for file_format, (extension, _) in FORMATS.items()
]
