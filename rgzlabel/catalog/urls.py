from django.urls import path
from django.views.generic import RedirectView

from rgzlabel.catalog import views

app_name = "catalog"
urlpatterns = [
    # The ingest page is a job page now (/jobs/ingest/); old bookmarks still find it.
    path("ingest/", RedirectView.as_view(pattern_name="learning:ingest"), name="ingest"),
    path("<int:source_id>/thumbnail.png", views.thumbnail, name="thumbnail"),
]
