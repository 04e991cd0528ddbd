from django.urls import path

from rgzlabel.science import views

app_name = "science"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("plots/<str:name>.png", views.plot, name="plot"),
    path("map/", views.embedding_map, name="map"),
    path("map.json", views.embedding_map_data, name="map-data"),
    path("sources/<int:source_id>/", views.source_page, name="source"),
    path("search/", views.search, name="search"),
    path("flags/", views.flagged_sources, name="flags"),
]
