'use strict';
// make install: the daemon, its configuration, the man pages and the
// systemd units land where configure said, the unit names the installed
// paths, and the installed units pass systemd-analyze verify.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const h = require('../lib/harness');

// RESPCACHE is $(abs_top_builddir)/src/respcache.
const builddir = path.resolve(path.dirname(h.daemonPath()), '..');

// A make of our own: not a job of the `make check` that runs us.
const env = { ...process.env };
for (const v of ['MAKEFLAGS', 'MFLAGS', 'MAKELEVEL', 'MAKEOVERRIDES', 'DESTDIR'])
	delete env[v];

function run(cmd, args, opts = {}) {
	return spawnSync(cmd, args, { encoding: 'utf8', timeout: 60000, env, ...opts });
}

function have(cmd) {
	return !run(cmd, ['--version']).error;
}

// The installation directories as make sees them (${prefix} expanded).
function makeVars(names) {
	const mk = path.join(h.tmpdir(), 'print.mk');
	fs.writeFileSync(mk, 'rc-print:\n' +
	    names.map((n) => `\t@echo '${n}=$(${n})'\n`).join(''));
	const r = run('make', ['-s', '--no-print-directory', '-C', builddir,
	    '-f', 'Makefile', '-f', mk, 'rc-print']);
	assert.equal(r.status, 0, `make rc-print: ${r.stderr}`);
	const vars = {};
	for (const line of r.stdout.split('\n')) {
		const i = line.indexOf('=');
		if (i > 0) vars[line.slice(0, i)] = line.slice(i + 1);
	}
	return vars;
}

function assertFile(f, what) {
	assert.ok(fs.statSync(f, { throwIfNoEntry: false })?.isFile(), `${what}: ${f}`);
}

test('make install DESTDIR=... installs everything, and the unit verifies', {
	skip: !fs.existsSync(path.join(builddir, 'Makefile')) ? 'no build tree' :
	    !have('make') ? 'make is not installed' : false,
}, async (t) => {
	const v = makeVars(['bindir', 'sysconfdir', 'mandir', 'systemdsystemunitdir']);
	const dest = h.tmpdir('respcache-install-');
	const inst = run('make', ['-s', '--no-print-directory', '-C', builddir,
	    'install', `DESTDIR=${dest}`]);
	assert.equal(inst.status, 0, `make install:\n${inst.stdout}${inst.stderr}`);

	const bin = path.join(dest, v.bindir, 'respcache');
	assertFile(bin, 'the daemon');
	fs.accessSync(bin, fs.constants.X_OK);
	assertFile(path.join(dest, v.sysconfdir, 'respcache.conf'), 'the configuration');
	const mandir = path.join(dest, v.mandir);
	assertFile(path.join(mandir, 'man8', 'respcache.8'), 'respcache(8)');
	assertFile(path.join(mandir, 'man5', 'respcache.conf.5'), 'respcache.conf(5)');

	if (!v.systemdsystemunitdir) {
		t.diagnostic('configured without a systemd unit directory: no units to check');
		return;
	}
	const unitdir = path.join(dest, v.systemdsystemunitdir);
	const service = path.join(unitdir, 'respcache.service');
	assertFile(service, 'the service unit');
	assertFile(path.join(unitdir, 'respcache.socket'), 'the socket unit');
	const unit = fs.readFileSync(service, 'utf8');
	const execStart = `${v.bindir}/respcache --config ${v.sysconfdir}/respcache.conf`;
	assert.ok(unit.split('\n').includes(`ExecStart=${execStart}`),
	    `the unit runs the installed daemon on the installed configuration (${execStart})`);
	assert.doesNotMatch(unit, /@[A-Za-z_]+@/, 'nothing is left unsubstituted');

	await t.test('systemd-analyze verify finds nothing to say', (t) => {
		if (!have('systemd-analyze'))
			return t.skip('systemd-analyze is not installed');
		if (!fs.existsSync('/bin/kill'))
			return t.skip('no /bin/kill (procps), which ExecReload= runs');
		// verify wants ExecStart's binary to exist: the DESTDIR one does.
		const dir = h.tmpdir('respcache-units-');
		fs.writeFileSync(path.join(dir, 'respcache.service'),
		    unit.replace(/^ExecStart=\S+/m, `ExecStart=${bin}`));
		fs.copyFileSync(path.join(unitdir, 'respcache.socket'),
		    path.join(dir, 'respcache.socket'));
		// With man(1), verify also checks Documentation= finds our pages.
		const args = ['verify'];
		if (!have('man'))
			args.push('--man=no');
		args.push(path.join(dir, 'respcache.service'), path.join(dir, 'respcache.socket'));
		const r = run('systemd-analyze', args, {
			env: { ...env, MANPATH: mandir },
		});
		const about = r.stderr.split('\n').filter((l) => /respcache/.test(l));
		assert.deepEqual(about, [], `systemd-analyze verify:\n${r.stderr}`);
		assert.equal(r.status, 0, `systemd-analyze verify exits ${r.status}:\n${r.stderr}`);
		if (r.stderr.trim() !== '')
			t.diagnostic(`systemd-analyze said, about other units: ${r.stderr.trim()}`);
	});
});
