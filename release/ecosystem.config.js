// PM2: one emp-redis worker process per GPU, each bound to its GPU.
//
//   cp .env.worker.example .env.worker     # set HUB_REDIS_URL (and the rest) there
//   pm2 start ecosystem.config.js && pm2 save && pm2 startup
//
// Edit GPUS to the indexes `nvidia-smi -L` lists, and INTERPRETER to the Python the pyz was
// built for (worker-linux-x86_64-cp312.pyz needs python3.12). Settings shared by all workers
// go in .env.worker next to this file; the per-GPU ones below override it.
const os = require("os");

const GPUS = [0, 1, 2, 3];
const INTERPRETER = "python3";
const DASHBOARD_BASE_PORT = 1511; // the worker's own default; GPU n listens on 1511 + n
const GRACE_SECONDS = 30; // keep equal to WORKER_SHUTDOWN_GRACE_SECONDS in .env.worker
const HOST = os.hostname().replace(/[^A-Za-z0-9._-]/g, "-");

module.exports = {
  apps: GPUS.map((gpu) => ({
    name: `emp-worker-gpu${gpu}`,
    script: "worker.pyz",
    interpreter: INTERPRETER,
    cwd: __dirname,
    exec_mode: "fork",
    instances: 1,
    autorestart: true,
    exp_backoff_restart_delay: 1000,
    // PM2 stops with SIGINT, then SIGKILL after kill_timeout: leave running jobs their grace.
    kill_timeout: (GRACE_SECONDS + 15) * 1000,
    time: true,
    env: {
      CUDA_VISIBLE_DEVICES: String(gpu),
      CUDA_DEVICE_ORDER: "PCI_BUS_ID", // CUDA numbers GPUs like NVML and nvidia-smi
      WORKER_ID: `${HOST}-gpu${gpu}`,
      WORKER_DASHBOARD_PORT: String(DASHBOARD_BASE_PORT + gpu),
      WORKER_ENV_FILE: ".env.worker",
      PYTHONUNBUFFERED: "1",
    },
  })),
};
