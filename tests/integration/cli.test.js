'use strict';
// The command line: -V, -h, -t, config errors, a taken port, flags over the file.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const h = require('../lib/harness');

function run(args, opts = {}) {
	const r = spawnSync(h.daemonPath(), args, { encoding: 'utf8', timeout: 10000, ...opts });
	assert.equal(r.error, undefined, `spawn: ${r.error}`);
	return r;
}

function writeConf(text) {
	const f = path.join(h.tmpdir(), 'respcache.conf');
	fs.writeFileSync(f, text);
	return f;
}

test('-V prints the version, -h the usage, both exit 0', () => {
	const v = run(['-V']);
	assert.equal(v.status, 0);
	assert.match(v.stdout, /^respcache \d+\.\d+\.\d+\n$/);
	const u = run(['-h']);
	assert.equal(u.status, 0);
	for (const flag of ['--config', '--listen', '--upstream', '--cache-dir', '--upstream-key-file', '-t'])
		assert.ok(u.stdout.includes(flag), `usage mentions ${flag}`);
	const bad = run(['--no-such-flag']);
	assert.equal(bad.status, 2, 'an unknown flag exits 2');
});

test('-t accepts the shipped config and the defaults, and opens nothing', () => {
	const shipped = path.join(__dirname, '..', '..', 'conf', 'respcache.conf');
	const dir = h.tmpdir();
	const r = run(['-t', '--config', shipped], { cwd: dir });
	assert.equal(r.status, 0, r.stderr);
	assert.match(r.stdout, /configuration OK/);
	assert.equal(fs.existsSync(path.join(dir, 'respcache-cache')), false, '-t creates no cache dir');
	assert.equal(run(['-t'], { cwd: dir }).status, 0, 'no config at all is valid');
});

test('-t refuses a bad config with the file, line and reason', () => {
	const f = writeConf('[server]\nlisten = 127.0.0.1:8080\nlisten_typo = 1\n');
	const r = run(['-t', '--config', f]);
	assert.notEqual(r.status, 0);
	assert.ok(r.stderr.includes(`${f}:3`), r.stderr);
	assert.match(r.stderr, /unknown key "listen_typo" in \[server\]/);
	const g = writeConf('[cache]\nmax_size = huge\n');
	const r2 = run(['-t', '--config', g]);
	assert.notEqual(r2.status, 0);
	assert.match(r2.stderr, /max_size: "huge" is not a size/);
	const r3 = run(['-t', '--upstream', 'ftp://example']);
	assert.notEqual(r3.status, 0);
	assert.match(r3.stderr, /not an http:\/\/ or https:\/\/ URL/);
	const r4 = run(['-t', '--upstream-key-file', '/nonexistent/key']);
	assert.notEqual(r4.status, 0);
	assert.match(r4.stderr, /\/nonexistent\/key: No such file/);
});

test('a flag overrides the config file', async () => {
	const up = await h.startUpstream();
	// The file says a port that is not listening; --upstream must win.
	const f = writeConf('[upstream]\nurl = http://127.0.0.1:1\n');
	const px = await h.startProxy({ upstream: up.url, args: ['--config', f] });
	try {
		const id = up.seed();
		const r = await h.request(`${px.url}/v1/responses/${id}`);
		assert.equal(r.status, 200);
	} finally {
		await px.stop();
		await up.close();
	}
});

test('a taken port: exits non-zero with a clear message', async () => {
	const up = await h.startUpstream();
	const px = await h.startProxy({ upstream: up.url });
	try {
		const r = run(['--listen', `127.0.0.1:${px.port}`, '--upstream', up.url, '--cache-dir', h.tmpdir()]);
		assert.notEqual(r.status, 0);
		assert.match(r.stderr, /cannot listen on 127\.0\.0\.1:\d+/);
	} finally {
		await px.stop();
		await up.close();
	}
});

test('a cache directory that cannot be created: exits 1 with one line naming it', () => {
	// A path under a regular file cannot become a directory, even for root.
	const file = path.join(h.tmpdir(), 'not-a-dir');
	fs.writeFileSync(file, '');
	const dir = path.join(file, 'cache');
	const r = run(['--listen', '127.0.0.1:0', '--admin-listen', '', '--cache-dir', dir]);
	assert.equal(r.status, 1);
	const lines = r.stderr.trim().split('\n');
	assert.equal(lines.length, 1, `one line: ${r.stderr}`);
	assert.ok(lines[0].includes(dir), `the line names the directory: ${r.stderr}`);
	assert.match(lines[0], /Not a directory/);
});

test('a cache directory that is not writable: exits 1 with one line naming it', (t) => {
	const parent = h.tmpdir();
	fs.chmodSync(parent, 0o755);
	const dir = path.join(parent, 'cache');
	let r;
	if (process.getuid && process.getuid() === 0) {
		r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--', h.daemonPath(),
			'--listen', '127.0.0.1:0', '--admin-listen', '', '--cache-dir', dir], { encoding: 'utf8', timeout: 10000 });
		if (r.error) return t.skip(`setpriv: ${r.error.message}`);
		if (/Permission denied/.test(r.stderr) && !r.stderr.includes(dir)) return t.skip(`nobody cannot run the binary: ${r.stderr}`);
	} else {
		fs.chmodSync(parent, 0o500);
		r = run(['--listen', '127.0.0.1:0', '--admin-listen', '', '--cache-dir', dir]);
		fs.chmodSync(parent, 0o700);
	}
	assert.equal(r.status, 1, r.stderr);
	assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
	assert.ok(r.stderr.includes(dir), r.stderr);
	assert.match(r.stderr, /Permission denied/);
});
