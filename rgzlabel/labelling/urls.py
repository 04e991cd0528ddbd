from django.urls import path

from rgzlabel.labelling import views

app_name = "labelling"
urlpatterns = [
    path("", views.label, name="label"),
    path("guest/", views.start_as_guest, name="guest"),
    path("vote/", views.vote, name="vote"),
    path("me/", views.me, name="me"),
    path("flag/", views.flag, name="flag"),
    path("unflag/", views.unflag, name="unflag"),
    path("guest/log-out/", views.guest_logout, name="guest-logout"),
    path("api/next/", views.api_next, name="api-next"),
    path("api/vote/", views.api_vote, name="api-vote"),
    path("api/undo/", views.api_undo, name="api-undo"),
    path("api/skip/", views.api_skip, name="api-skip"),
    path("api/release/", views.api_release, name="api-release"),
    path("api/flag/", views.api_flag, name="api-flag"),
    path("api/tutorial-seen/", views.api_tutorial_seen, name="api-tutorial-seen"),
]
