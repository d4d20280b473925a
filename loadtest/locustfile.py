"""Locust scenario: users ask for an ad and give feedback, as the simulator does (FastHttpUser).

Run headless and bounded with ``make loadtest`` (see ``locust.conf``), against a running ad server.
"""

from __future__ import annotations

import random

from locust import FastHttpUser, between, task

from index.geo import DEFAULT_GEO

DEVICES = ("Android Mobile", "iPhone", "Windows Computer", "Macbook", "Linux Computer")
ANONYMOUS_USER = "1111-1111-1111-1111"
CITIES, WEIGHTS = DEFAULT_GEO.city_weights()


class AdUser(FastHttpUser):
    """One simulated device: mostly known users, 5% privacy-enabled, feedback on every served ad."""

    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.user_id = f"locust-{self.rng.randrange(10**9)}"
        self.device = self.rng.choice(DEVICES)

    @task
    def serve_and_feedback(self) -> None:
        city = DEFAULT_GEO.city(self.rng.choices(CITIES, WEIGHTS)[0])
        assert city is not None
        user = ANONYMOUS_USER if self.rng.random() < 0.05 else self.user_id
        params = {"device_type": self.device, "city": city.name, "state": city.state}
        with self.client.get(
            f"/ad/user/{user}/serve", params=params, name="/ad/user/[id]/serve", catch_response=True
        ) as response:
            if response.status_code == 404:
                response.success()  # no eligible ad is a valid answer
                return
            if response.status_code != 200:
                response.failure(f"serve HTTP {response.status_code}")
                return
            request_id = response.json()["request_id"]
        click = int(self.rng.random() < 0.1)
        acquisition = int(click and self.rng.random() < 0.08)
        self.client.post(
            f"/ad/{request_id}/feedback",
            json={"view": 1, "click": click, "acquisition": acquisition},
            name="/ad/[request_id]/feedback",
        )
