// The layers point one way: routes → plugins → lib → db → schemas (app.ts, server.ts and worker.ts on top).
// Nothing imports upward, nothing production imports the tests' or the bench's helpers, and there are no cycles.
const ENTRY_POINTS = '^(app|server|worker)\\.ts$'
const above = (...layers) => ({ path: [ENTRY_POINTS, ...layers.map((layer) => `^${layer}/`)] })

module.exports = {
  forbidden: [
    { name: 'no-cycles', severity: 'error', from: {}, to: { circular: true } },
    { name: 'schemas-import-only-schemas', severity: 'error', from: { path: '^schemas/' }, to: above('db', 'lib', 'plugins', 'routes') },
    { name: 'db-imports-only-db-and-schemas', severity: 'error', from: { path: '^db/' }, to: above('lib', 'plugins', 'routes') },
    { name: 'lib-never-imports-plugins-or-routes', severity: 'error', from: { path: '^lib/' }, to: above('plugins', 'routes') },
    { name: 'plugins-never-import-routes', severity: 'error', from: { path: '^plugins/' }, to: above('routes') },
    { name: 'routes-never-import-the-entry-points', severity: 'error', from: { path: '^routes/' }, to: above() },
    {
      name: 'production-never-imports-tools',
      severity: 'error',
      from: { path: [ENTRY_POINTS, '^(lib|db|plugins|routes|schemas)/'] },
      to: { path: '^(test|bench|faults|scripts|examples)/' }
    },
    { name: 'no-unresolvable-imports', severity: 'error', from: {}, to: { couldNotResolve: true } }
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'], exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'types', 'default'] }
  }
}
