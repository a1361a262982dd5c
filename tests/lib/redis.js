'use strict';
/*
 * A real redis-server (Debian's package) for the shared tier's tests: one
 * per test, on a free loopback port, no persistence, stopped by its PID.
 * redis-cli (from redis-tools, which redis-server depends on) inspects it.
 */
const { spawn, execFile, execFileSync } = require('node:child_process');
const h = require('./harness');

function which(cmd) {
	try {
		return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || null;
	} catch {
		return null;
	}
}

const REDIS_SERVER = which('redis-server');
const REDIS_CLI = which('redis-cli');
/* Why the shared tier's tests cannot run here, or null. */
const MISSING = !REDIS_SERVER || !REDIS_CLI ?
	'redis-server and redis-cli are not installed (apt-get install redis-server)' : null;

async function spawnRedis(port, password) {
	const dir = h.tmpdir('respcache-redis-');
	const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
		'--dir', dir, '--logfile', '', '--daemonize', 'no'];
	if (password) args.push('--requirepass', password);
	const proc = h.track(spawn(REDIS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
	let out = '';
	const exited = new Promise((resolve) => proc.on('close', (code, signal) => resolve({ code, signal })));
	proc.stdout.setEncoding('utf8');
	proc.stderr.setEncoding('utf8');
	proc.stderr.on('data', (d) => { out += d; });
	await h.within(new Promise((resolve, reject) => {
		proc.stdout.on('data', (d) => {
			out += d;
			if (/Ready to accept connections/.test(out)) resolve();
		});
		exited.then(({ code }) => reject(new Error(`redis-server exited (${code}) before it was ready:\n${out}`)));
	}), 10000, 'redis-server ready');
	return { proc, exited, output: () => out };
}

/*
 * Start one.  The object it resolves to: url (for [shared] redis), port,
 * pid, cli(...args) (redis-cli's output, trimmed), stop() (SIGTERM, waits),
 * kill() (SIGKILL, waits) and start() again on the same port.
 */
async function startRedis({ password = null } = {}) {
	if (MISSING) throw new Error(MISSING);
	const port = await h.freePort();
	const r = {
		port,
		url: `redis://127.0.0.1:${port}`,
		password,
		srv: null,
		get pid() { return this.srv ? this.srv.proc.pid : null; },
		async start() {
			this.srv = await spawnRedis(port, password);
			return this;
		},
		async stopWith(sig) {
			if (!this.srv) return;
			const { proc, exited } = this.srv;
			this.srv = null;
			process.kill(proc.pid, sig);
			await h.within(exited, 10000, `redis-server exit after ${sig}`);
		},
		stop() { return this.stopWith('SIGTERM'); },
		kill() { return this.stopWith('SIGKILL'); },
		cli(...args) {
			const a = ['-h', '127.0.0.1', '-p', String(port), '--no-auth-warning'];
			if (password) a.push('-a', password);
			return new Promise((resolve, reject) => {
				execFile(REDIS_CLI, [...a, ...args], { timeout: 5000, encoding: 'utf8' }, (err, stdout, stderr) => {
					if (err) reject(new Error(`redis-cli ${args.join(' ')}: ${err.message} ${stderr}`));
					else resolve(stdout.trim());
				});
			});
		},
	};
	return r.start();
}

module.exports = { startRedis, MISSING };
