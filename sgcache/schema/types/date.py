"""The ``date`` data type: ``YYYY-MM-DD``, stored as that text (text order is
date order); relative-date relations in the site's time zone."""

from sgcache.schema.types.base import DATES, DataType, date_in

TYPE = DataType("date", encode=date_in, relations=DATES, filter="date", sort="value", as_name="text")
