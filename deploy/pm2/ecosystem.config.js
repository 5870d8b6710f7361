// PM2 process file: `pm2 start deploy/pm2/ecosystem.config.js`.
// The gateway is a Python process; PM2 only supervises it (restarts, logs). Run one PM2 app per
// port, or `serve --workers N` for several worker processes on one port.
module.exports = {
  apps: [
    {
      name: "hybridfast",
      script: ".venv/bin/python",
      args: "-m hybridfast serve --config hybridfast.yaml",
      interpreter: "none",
      cwd: __dirname + "/../..",
      env: { PYTHONUNBUFFERED: "1" },
      // SIGTERM drains in-flight requests and flushes the ledger; give it time.
      kill_timeout: 30000,
      autorestart: true,
      max_restarts: 20,
      restart_delay: 2000,
    },
  ],
};
