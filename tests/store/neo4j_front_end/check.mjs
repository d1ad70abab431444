// Lints Cypher with Neo4j's own parser and semantic analysis (@neo4j-cypher/language-support),
// for tests/store/test_cypher_front_end.py, which decides what counts as a failure.
//
// stdin:  {"schema": {"labels": [...], "relationshipTypes": [...], "propertyKeys": [...]},
//          "versions": ["CYPHER 5", "CYPHER 25"],
//          "statements": [{"name": ..., "text": ..., "parameters": [...], "consoleCommands": false}]}
// stdout: {"package": "<version>", "procedures": {"CYPHER 5": n, ...}, "functions": {...},
//          "results": [{"name": ..., "version": ..., "diagnostics": [{"severity", "message", "line", "column"}]}]}
//
// Procedures and functions come from the server dump the package ships as test data
// (testData.mockSchema), so a misspelt procedure or function is an error.
import { readFileSync } from 'node:fs';
import { lintCypherQuery, testData } from '@neo4j-cypher/language-support';

const request = JSON.parse(readFileSync(0, 'utf8'));
const { version } = JSON.parse(readFileSync(new URL('./node_modules/@neo4j-cypher/language-support/package.json', import.meta.url)));
const { procedures, functions } = testData.mockSchema;
const count = (registry) => Object.fromEntries(Object.entries(registry).map(([v, r]) => [v, Object.keys(r).length]));

const results = [];
for (const cypherVersion of request.versions) {
  for (const statement of request.statements) {
    const dbSchema = {
      ...request.schema,
      procedures,
      functions,
      defaultLanguage: cypherVersion,
      parameters: Object.fromEntries(statement.parameters.map((name) => [name, null])),
    };
    const { diagnostics } = lintCypherQuery(statement.text, dbSchema, {
      consoleCommandsEnabled: Boolean(statement.consoleCommands),
    });
    results.push({
      name: statement.name,
      version: cypherVersion,
      diagnostics: diagnostics.map((d) => ({
        severity: d.severity,
        message: d.message,
        line: d.range.start.line + 1,
        column: d.range.start.character + 1,
      })),
    });
  }
}
process.stdout.write(JSON.stringify({ package: version, procedures: count(procedures), functions: count(functions), results }));
