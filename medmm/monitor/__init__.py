"""Bedside monitoring: NEWS2 (RCP 2017) and a streaming health monitor that adds a model's risk."""

from .news2 import BANDS, News2Result, news2, response_band

__all__ = ["news2", "News2Result", "response_band", "BANDS", "HealthMonitor", "Alert", "replay"]


def __getattr__(name: str):
    if name in ("HealthMonitor", "Alert", "replay", "MonitorConfig"):
        from . import health

        return getattr(health, name)
    raise AttributeError(name)
