"""Tests of the Crisp client, its request budget and the local sandbox."""
