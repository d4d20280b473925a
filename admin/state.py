"""The admin service's clients and settings, built in its lifespan and held on one typed object."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import httpx

from admin.insight import Insight
from admin.publish import InstructionPublisher
from admin.settings import AdminConfig
from adplatform.config import Config
from adplatform.redis_client import RedisClient
from budget.budget_redis import BudgetStore


@dataclass
class AdminState:
    """Everything the routes use. Built by ``admin.lifespan``; never at import time."""

    config: Config
    settings: AdminConfig
    pool: asyncpg.Pool
    redis: RedisClient
    budgets: BudgetStore
    publisher: InstructionPublisher
    #: For the ad servers' index route: no keep-alive, so each poll opens a new connection, which the
    #: kernel may hand to another worker behind the same port.
    adservers: httpx.AsyncClient
    #: The copy of the index, the blocked set and the request samples behind explain and diagnosis.
    insight: Insight | None = None


@dataclass
class StateRef:
    """The app's handle on its state; ``state`` is set once the lifespan has started."""

    state: AdminState | None = None
