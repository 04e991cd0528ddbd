"""Page-number pagination for the REST API (its own module: DRF settings import it early)."""

from __future__ import annotations

from rest_framework.pagination import PageNumberPagination


class ApiPagination(PageNumberPagination):
    """50 rows a page by default; clients may ask for up to 500 with ``page_size``."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
