"""The operations surface: web views and their access rules, dashboard, metrics, lag."""
