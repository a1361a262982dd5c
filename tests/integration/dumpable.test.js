'use strict';
// The daemon is never dumpable, even started with no key at all (a SIGHUP
// may bring the first one later): another process of the same user can
// read neither /proc/PID/environ nor its memory, and no core is dumped.
// The kernel shows this as /proc/PID/* owned by root, not by the user.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { spawnSync } = require('node:child_process');
const h = require('../lib/harness');

const NOBODY = 65534;

test('started with no credentials, as an unprivileged user: its /proc/PID/environ is root\'s and that user cannot read it', async (t) => {
	if (process.getuid() !== 0) {
		t.skip('needs root, to run the daemon as another user');
		return;
	}
	if (spawnSync('setpriv', ['--version']).error) {
		t.skip('setpriv (util-linux) is not installed');
		return;
	}
	const as = ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups'];
	const cacheDir = h.tmpdir();
	fs.chownSync(cacheDir, NOBODY, NOBODY);
	await h.withStack({ proxy: { wrap: as, cacheDir } }, async ({ px }) => {
		assert.match(px.stderr(), /client keys passed through/, 'no credential is configured');
		const status = fs.readFileSync(`/proc/${px.pid}/status`, 'utf8');
		assert.match(status, new RegExp(`^Uid:\\s+${NOBODY}\\s`, 'm'), 'the daemon runs as nobody');
		assert.equal(fs.statSync(`/proc/${px.pid}/environ`).uid, 0, '/proc/PID/environ is root\'s (not dumpable)');
		const peek = spawnSync(as[0], [...as.slice(1), 'cat', `/proc/${px.pid}/environ`], { encoding: 'utf8' });
		assert.notEqual(peek.status, 0, 'the same user cannot read its environment');
		assert.match(peek.stderr, /Permission denied/);
		assert.equal((await h.request(`${px.adminUrl}/healthz`, { headers: { authorization: null }, agent: false })).status, 200);
	});
});
