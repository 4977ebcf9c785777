"""The provider agent: GPU detection, job execution, metering."""
