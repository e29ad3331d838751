/**
 * A YAML parser's error as one line: what is wrong and where ("… at line 3, column 10"). The
 * parser's message goes on with the offending line quoted and a caret under it; a config file's
 * line may hold a secret (agent.token, consul.token), which an error message must not print.
 */
export function yamlProblem(err: unknown): string {
  return ((err as Error).message ?? String(err)).split("\n")[0].replace(/:$/, "");
}
