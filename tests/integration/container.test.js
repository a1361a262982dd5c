'use strict';
// The OCI image (Containerfile, deploy/build-image), built and run with
// podman against a mock upstream on the host's loopback: a cache hit, the
// key from a mounted file reaching the upstream, /healthz, SIGTERM within
// shutdown_timeout with exit 0, not root, and what it adds to the base.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync, spawnSync } = require('node:child_process');
const h = require('../lib/harness');

const ROOT = path.join(__dirname, '../..');
const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const skip = !have('podman') ? 'skipped: podman is not installed (apt-get install podman mmdebstrap runc)' :
	!have('runc') ? 'skipped: runc is not installed' : false;
const TAG = 'localhost/respcache:test-suite';

function podman(...args) {
	return execFileSync('podman', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 600000 }).trim();
}

test('the image: built, run as a non-root user, a cache hit with the mounted key, /healthz, SIGTERM exits 0', { skip, timeout: 900000 }, async (t) => {
	const t0 = Date.now();
	execFileSync(path.join(ROOT, 'deploy/build-image'), [TAG], { cwd: ROOT, stdio: 'ignore', timeout: 900000 });
	t.diagnostic(`image built in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
	const size = Number(podman('image', 'inspect', TAG, '--format', '{{.Size}}'));
	const base = Number(podman('image', 'inspect', podman('image', 'inspect', TAG, '--format',
		'{{index .Labels "org.opencontainers.image.base.name"}}') || 'localhost/debian:bookworm-slim', '--format', '{{.Size}}'));
	t.diagnostic(`image ${(size / 1e6).toFixed(1)} MB, base ${(base / 1e6).toFixed(1)} MB: +${((size - base) / 1e6).toFixed(1)} MB`);
	assert.ok(size - base < 30e6, `the image adds ${size - base} bytes to its base`);
	assert.equal(podman('image', 'inspect', TAG, '--format', '{{.Config.User}}'), '10001:10001');
	assert.match(podman('image', 'inspect', TAG, '--format', '{{.Config.StopSignal}}'), /SIGTERM|15/);

	const up = await h.startUpstream({ requireKey: 'sk-from-the-secret' });
	const dir = h.tmpdir();
	const key = path.join(dir, 'openai-key');
	fs.writeFileSync(key, 'sk-from-the-secret\n', { mode: 0o600 });
	fs.chownSync(key, 10001, 10001);	// as a Secret mounted for the pod's user
	const port = await h.freePort();
	const admin = await h.freePort();
	const name = `respcache-test-${process.pid}`;
	const t1 = Date.now();
	podman('run', '-d', '--name', name, '--runtime', 'runc', '--network', 'host',
		'--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024',
		'-v', `${key}:/run/secrets/openai-key:ro`,
		'-e', `RESPCACHE_UPSTREAM=${up.url}`, '-e', `RESPCACHE_LISTEN=127.0.0.1:${port}`,
		'-e', `RESPCACHE_ADMIN_LISTEN=127.0.0.1:${admin}`,
		'-e', 'RESPCACHE_UPSTREAM_KEY_FILE=/run/secrets/openai-key', '-e', 'RESPCACHE_WORKERS=1',
		TAG);
	try {
		const base = `http://127.0.0.1:${port}`;
		await h.until(async () => {
			try { return (await h.request(`http://127.0.0.1:${admin}/healthz`, { headers: { authorization: null } })).status === 200; }
			catch { return false; }
		}, { timeoutMs: 30000, what: 'the container\'s /healthz' });
		t.diagnostic(`started and healthy in ${Date.now() - t1} ms`);
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const r1 = await h.request(base + p, { headers: { authorization: 'Bearer sk-app-never-forwarded' } });
		assert.equal(r1.status, 200, r1.body);
		h.assertXCache(r1, 'MISS');
		h.assertXCache(await h.request(base + p, { headers: { authorization: 'Bearer sk-app-never-forwarded' } }), 'HIT');
		assert.equal(up.count('GET', p), 1);
		assert.equal(up.requests[0].headers.authorization, 'Bearer sk-from-the-secret', 'the mounted key went upstream');
		// Not root: the daemon's uid, seen from the host.
		const pid = podman('inspect', name, '--format', '{{.State.Pid}}');
		const uid = /Uid:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1];
		assert.equal(uid, '10001', 'the daemon runs as uid 10001');
		const t2 = Date.now();
		podman('kill', '--signal', 'TERM', name);
		const code = podman('wait', name);
		t.diagnostic(`stopped ${Date.now() - t2} ms after SIGTERM, exit ${code}`);
		assert.equal(code, '0');
		assert.ok(Date.now() - t2 < 30000, 'within shutdown_timeout');
	} finally {
		spawnSync('podman', ['rm', '-f', name], { stdio: 'ignore' });
		await up.close();
	}
});
