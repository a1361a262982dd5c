'use strict';
// deploy/: the Kubernetes manifests and the compose file, checked without a
// cluster (no kubectl here): YAML that parses, and the fields that make them
// what README says they are.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const YAML = require('yaml');

const DEPLOY = path.join(__dirname, '../../deploy');
const docs = (f) => YAML.parseAllDocuments(fs.readFileSync(path.join(DEPLOY, f), 'utf8'), { merge: true }).map((d) => {
	assert.deepEqual(d.errors, [], `${f}: ${d.errors.join('; ')}`);
	return d.toJS();
});

/* What every respcache container in a pod must have. */
function checkRespcache(c, where) {
	const env = Object.fromEntries((c.env || []).map((e) => [e.name, e.value]));
	assert.match(c.image, /respcache/, `${where}: image`);
	assert.match(env.RESPCACHE_ADMIN_LISTEN, /^127\.0\.0\.1:9090$/, `${where}: admin on the pod's loopback only`);
	assert.equal(env.RESPCACHE_UPSTREAM_KEY_FILE, '/run/secrets/openai/key', `${where}: the key from a file`);
	for (const [k, v] of Object.entries(env)) {
		assert.ok(!/^sk-/.test(v) || k === 'OPENAI_API_KEY', `${where}: no key in ${k}`);
	}
	for (const probe of ['readinessProbe', 'livenessProbe']) {
		assert.equal(c[probe].httpGet.port, 9090, `${where}: ${probe} on the admin port`);
		assert.match(c[probe].httpGet.path, /^\/(readyz|healthz)$/);
	}
	assert.ok(c.resources && c.resources.requests && c.resources.requests.cpu && c.resources.requests.memory, `${where}: requests`);
	assert.equal(c.securityContext.readOnlyRootFilesystem, true, `${where}: read-only root`);
	assert.equal(c.securityContext.allowPrivilegeEscalation, false);
	assert.deepEqual(c.securityContext.capabilities.drop, ['ALL'], `${where}: capabilities dropped`);
	const mounts = Object.fromEntries(c.volumeMounts.map((m) => [m.mountPath, m]));
	assert.equal(mounts['/run/secrets/openai'].readOnly, true, `${where}: the Secret read-only`);
	assert.ok(mounts['/var/lib/respcache'], `${where}: the cache volume`);
}

function checkPod(spec, where) {
	assert.equal(spec.securityContext.runAsNonRoot, true, `${where}: non-root`);
	assert.equal(spec.securityContext.runAsUser, 10001, `${where}: the image's uid`);
	const vols = Object.fromEntries(spec.volumes.map((v) => [v.name, v]));
	assert.equal(vols['openai-key'].secret.secretName, 'openai-key', `${where}: the key is a Secret`);
	assert.ok(vols.cache.emptyDir, `${where}: the cache is an emptyDir`);
}

test('deploy/kubernetes/sidecar.yaml: respcache as a native sidecar beside an app pointed at it', () => {
	const [dep] = docs('kubernetes/sidecar.yaml');
	assert.equal(dep.apiVersion, 'apps/v1');
	assert.equal(dep.kind, 'Deployment');
	const spec = dep.spec.template.spec;
	checkPod(spec, 'sidecar');
	const [rc] = spec.initContainers;
	assert.equal(rc.name, 'respcache');
	assert.equal(rc.restartPolicy, 'Always', 'a native sidecar: an initContainer with restartPolicy Always');
	checkRespcache(rc, 'sidecar');
	const app = spec.containers[0];
	const env = Object.fromEntries(app.env.map((e) => [e.name, e.value]));
	assert.equal(env.OPENAI_BASE_URL, 'http://127.0.0.1:8080/v1', 'the app talks to the sidecar');
	assert.deepEqual(dep.spec.selector.matchLabels, dep.spec.template.metadata.labels);
});

test('deploy/kubernetes/gateway.yaml: a Deployment and a Service that never exposes the admin port', () => {
	const [dep, svc] = docs('kubernetes/gateway.yaml');
	assert.equal(dep.kind, 'Deployment');
	assert.equal(svc.kind, 'Service');
	checkPod(dep.spec.template.spec, 'gateway');
	const [c] = dep.spec.template.spec.containers;
	checkRespcache(c, 'gateway');
	assert.ok(c.ports.every((p) => p.containerPort !== 9090), 'no admin port among the container ports');
	assert.ok(svc.spec.ports.every((p) => p.port !== 9090 && p.targetPort !== 9090), 'no admin port in the Service');
	assert.deepEqual(svc.spec.selector, dep.spec.template.metadata.labels);
	assert.ok(dep.spec.template.spec.terminationGracePeriodSeconds > 30, 'longer than shutdown_timeout');
});

test('deploy/compose.yaml: two respcache nodes sharing one Redis, and a client pointed at one', () => {
	const [c] = docs('compose.yaml');
	const s = c.services;
	assert.ok(s.redis && s['respcache-a'] && s['respcache-b'] && s.client);
	for (const n of ['respcache-a', 'respcache-b']) {
		assert.equal(s[n].environment.RESPCACHE_SHARED_REDIS, 'redis://redis:6379/0', `${n}: the shared tier`);
		assert.equal(s[n].environment.RESPCACHE_UPSTREAM_KEY_FILE, '/run/secrets/openai-key', `${n}: the key from a file`);
		assert.equal(s[n].read_only, true);
		assert.deepEqual(s[n].cap_drop, ['ALL']);
	}
	assert.notEqual(s['respcache-a'].volumes[0], s['respcache-b'].volumes[0], 'a cache each');
	assert.match(s.client.environment.OPENAI_BASE_URL, /^http:\/\/respcache-a:8080\/v1$/);
	assert.equal(c.secrets['openai-key'].file, './openai-key');
});
