"""Analytics: DAU, top events, retention and summary, answered from rollups where that is exact."""
