from django.urls import path

from rgzlabel.learning import views

app_name = "learning"
urlpatterns = [
    path("", views.job_list, name="jobs"),
    path("trigger/", views.trigger, name="trigger"),
    path("ingest/", views.ingest, name="ingest"),
    path("<int:job_id>/", views.job_detail, name="job"),
    path("<int:job_id>/cancel/", views.cancel, name="cancel"),
    path("<int:job_id>/rerun/", views.rerun, name="rerun"),
    path("<int:job_id>.json", views.job_status, name="job-status"),
    path("classifiers/<int:classifier_id>/promote/", views.promote, name="promote"),
    path("classifiers/<int:classifier_id>/unpin/", views.unpin, name="unpin"),
]
