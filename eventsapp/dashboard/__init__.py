"""The dashboard: one HTML page drawing the stats JSON API as charts, every asset served by the app."""
