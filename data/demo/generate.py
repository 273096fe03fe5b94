"""Regenerate the demo data (deterministic): python data/demo/generate.py

web_metrics.csv   hourly requests and latency for three regions (file job ``demo_web_metrics``)
sensor_readings.csv  hourly temperature, vibration and pressure of four machines (SQL job
                  ``demo_sensors``; the demo loads it into a local SQLite table)

Both span 2024-02-01 .. 2024-03-08 (UTC). Anomalies a person can see are placed in the last
week (2024-03-01 onwards), the week the demo scores; the four weeks before are clean training data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
INDEX = pd.date_range("2024-02-01", "2024-03-08", freq="1h", inclusive="left", tz="UTC")


def _daily(amplitude: float, phase: float = 0.0) -> np.ndarray:
    hours = INDEX.hour.to_numpy() + INDEX.minute.to_numpy() / 60
    return amplitude * np.sin(2 * np.pi * (hours - 6 + phase) / 24)


def web_metrics(rng: np.random.Generator) -> pd.DataFrame:
    frames = []
    for region, base, phase in (("eu", 1200, 0.0), ("us", 1800, -6.0), ("apac", 700, 8.0)):
        weekly = np.where(INDEX.day_of_week >= 5, 0.8, 1.0)
        requests = (base + _daily(0.4 * base, phase)) * weekly + rng.normal(0, 0.03 * base, len(INDEX))
        latency = 120 + 0.02 * (requests - base) + rng.normal(0, 4, len(INDEX))
        if region == "eu":  # a traffic spike (a bot) for three hours
            spike = (INDEX >= "2024-03-03 14:00") & (INDEX < "2024-03-03 17:00")
            requests[spike] *= 2.6
        if region == "us":  # a bad deploy: latency jumps by 60 ms for a day
            shift = (INDEX >= "2024-03-05 09:00") & (INDEX < "2024-03-06 09:00")
            latency[shift] += 60
        if region == "apac":  # an outage: requests drop to near zero for two hours
            outage = (INDEX >= "2024-03-06 03:00") & (INDEX < "2024-03-06 05:00")
            requests[outage] = rng.uniform(5, 20, outage.sum())
        frames.append(
            pd.DataFrame(
                {
                    "timestamp": INDEX.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "region": region,
                    "requests": np.round(requests).astype(int),
                    "latency_ms": np.round(latency, 2),
                }
            )
        )
    return pd.concat(frames).sort_values(["timestamp", "region"], kind="stable")


def sensor_readings(rng: np.random.Generator) -> pd.DataFrame:
    frames = []
    for i, machine in enumerate(("press_1", "press_2", "pump_1", "pump_2")):
        temperature = 60 + 5 * i + _daily(3) + rng.normal(0, 0.5, len(INDEX))
        vibration = 2.0 + 0.05 * (temperature - 60) + rng.normal(0, 0.08, len(INDEX))
        pressure = 30 + 0.3 * (temperature - 60 - 5 * i) + rng.normal(0, 0.3, len(INDEX))
        if machine == "press_2":  # a bearing wears: vibration climbs over six hours, temperature normal
            wear = (INDEX >= "2024-03-04 10:00") & (INDEX < "2024-03-04 16:00")
            vibration[wear] += np.linspace(0.6, 1.8, wear.sum())
        if machine == "pump_1":  # a leak: pressure falls while temperature stays normal
            leak = (INDEX >= "2024-03-06 20:00") & (INDEX < "2024-03-07 02:00")
            pressure[leak] -= 6
        frames.append(
            pd.DataFrame(
                {
                    "reading_time": INDEX.strftime("%Y-%m-%d %H:%M:%S"),
                    "machine": machine,
                    "temperature": np.round(temperature, 3),
                    "vibration": np.round(vibration, 4),
                    "pressure": np.round(pressure, 3),
                }
            )
        )
    return pd.concat(frames).sort_values(["reading_time", "machine"], kind="stable")


if __name__ == "__main__":
    rng = np.random.default_rng(20240301)
    web_metrics(rng).to_csv(HERE / "web_metrics.csv", index=False)
    sensor_readings(rng).to_csv(HERE / "sensor_readings.csv", index=False)
