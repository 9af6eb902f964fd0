"""Tests of the tracking plan, the lifecycle engine and the plan commands."""
