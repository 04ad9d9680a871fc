"""What the worker knows about its machine, and how it finds out.

`info` holds the data (HardwareInfo, GpuInfo, units) and imports nothing else, so any module
can pass it around without loading NVML or psutil; `detection` reads the machine once at
start-up, `overrides` lays configured figures over it, `report` turns it into documents,
`utilization` takes the dashboard's live readings, and `nvml` is the guarded NVML access the
last two share. Nothing is re-exported here, so importing `info` loads only `info`.
"""
