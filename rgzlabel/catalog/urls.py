from django.urls import path

from rgzlabel.catalog import views

app_name = "catalog"
urlpatterns = [
    path("<int:source_id>/thumbnail.png", views.thumbnail, name="thumbnail"),
]
