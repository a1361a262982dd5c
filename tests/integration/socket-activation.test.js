'use strict';
// Socket activation: handed a listening socket the way systemd hands it
// ($LISTEN_FDS, fd 3), the daemon answers on it with every worker, binds
// no listen address of its own, and still drains and exits 0 on SIGTERM.
// Built without libsystemd, it refuses the socket with a clear message.
// systemd-socket-activate plays systemd.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const h = require('../lib/harness');

const activator = 'systemd-socket-activate';
const haveActivator = !spawnSync(activator, ['--version']).error;
// RESPCACHE is $(abs_top_builddir)/src/respcache; config.h is beside src.
const configH = path.join(path.dirname(h.daemonPath()), '..', 'config.h');
const withLibsystemd = fs.existsSync(configH) ?
    /^#define HAVE_LIBSYSTEMD 1$/m.test(fs.readFileSync(configH, 'utf8')) : true;

/* Whether something accepts connections on 127.0.0.1:port. */
function accepts(port) {
	return new Promise((resolve) => {
		const s = net.connect(port, '127.0.0.1');
		s.on('connect', () => { s.destroy(); resolve(true); });
		s.on('error', () => resolve(false));
	});
}

test('the daemon serves on the socket systemd passes, and binds nothing else', {
	skip: haveActivator ? false : `${activator} is not installed`,
}, async () => {
	const up = await h.startUpstream();
	const port = await h.freePort();
	const unused = await h.freePort();
	const args = ['-l', `127.0.0.1:${port}`];
	// It passes the daemon only the environment -E names.
	for (const v of ['ASAN_OPTIONS', 'UBSAN_OPTIONS', 'TSAN_OPTIONS'])
		if (process.env[v]) args.push('-E', `${v}=${process.env[v]}`);
	args.push(h.daemonPath(), '--listen', `127.0.0.1:${unused}`,
	    '--upstream', up.url, '--cache-dir', h.tmpdir(),
	    '--admin-listen', '', '--workers', '2');
	const proc = spawn(activator, args, { stdio: ['ignore', 'ignore', 'pipe'] });
	let err = '';
	proc.stderr.setEncoding('utf8');
	proc.stderr.on('data', (d) => { err += d; });
	const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
	try {
		// The daemon starts at the first connection, this probe, which
		// waits in the socket's backlog meanwhile.
		await h.until(() => accepts(port), { what: `${activator} listening` });
		const id = up.seed();
		if (!withLibsystemd) {
			await assert.rejects(h.request(`http://127.0.0.1:${port}/v1/responses/${id}`));
			assert.deepEqual(await exited, { code: 1, signal: null }, err);
			assert.match(err, /socket activation: systemd passed sockets, but respcache was built without libsystemd/);
			return;
		}
		for (let i = 0; i < 4; i++) {
			const r = await h.request(`http://127.0.0.1:${port}/v1/responses/${id}`);
			assert.equal(r.status, 200, err);
		}
		assert.ok(err.includes(`respcache: listening on 127.0.0.1:${port}`), err);
		assert.equal(await accepts(unused), false, '[server] listen is not bound');
		process.kill(proc.pid, 'SIGTERM');
		const r = await exited;
		assert.deepEqual(r, { code: 0, signal: null }, err);
		assert.doesNotMatch(err, h.SANITIZER_RE);
	} finally {
		if (proc.exitCode === null && proc.signalCode === null)
			proc.kill('SIGKILL');
		await up.close();
	}
});
