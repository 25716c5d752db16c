"""OTLP span export: a faster encoding behind the SDK's own exporters."""
