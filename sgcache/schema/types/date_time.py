"""The ``date_time`` data type: stored as the 20-character UTC wire form
``YYYY-MM-DDTHH:MM:SSZ`` (text order is time order)."""

from sgcache.schema.types.base import DATES, DataType, datetime_in

TYPE = DataType("date_time", encode=datetime_in, relations=DATES, filter="date_time", sort="value",
                as_name="text")
