"""A timer trigger firing every second and at start-up."""

from __future__ import annotations

import azure.functions as func
from azure.functions.timer import TimerRequest

app = func.FunctionApp()

TICKS: list[TimerRequest] = []


@app.timer_trigger(arg_name="timer", schedule="* * * * * *", run_on_startup=True)
def tick(timer: func.TimerRequest) -> None:
    assert isinstance(timer, TimerRequest)
    TICKS.append(timer)
