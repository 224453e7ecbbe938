"""Pipeline stages: functions of their inputs, their typed sub-config and the engine's resources."""
