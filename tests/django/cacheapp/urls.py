from django.urls import path
from django.views.decorators.cache import cache_page

from tests.django.cacheapp import run

urlpatterns = [
    path("page", cache_page(60)(run.page)),
    path("session/write", run.session_write),
    path("session/read", run.session_read),
]
