from django.urls import path

from rgzlabel.catalog import views

app_name = "catalog"
urlpatterns = [
    path("ingest/", views.ingest, name="ingest"),
    path("<int:source_id>/thumbnail.png", views.thumbnail, name="thumbnail"),
]
