"""The zkserve Ray Serve application: ingress, predictors, provers and the proof store."""

from serve.app.builder import APP_NAME, app_builder, build_app, start

__all__ = ["APP_NAME", "app_builder", "build_app", "start"]
