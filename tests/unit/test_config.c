/*
 * test_config.c -- config.c: the SPEC §3 document, every rejection (the
 * message must start with the key's path), defaults, tokens and auth.
 */
#include "t.h"
#include "../../common/config.h"
#include "../../common/jg.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/sha.h>

/* Double quotes are written as ' in these tables for readability. */
static char *dq(const char *s)
{
	static char out[4096];
	size_t k;

	for (k = 0; s[k] && k < sizeof out - 1; k++)
		out[k] = s[k] == '\'' ? '"' : s[k];
	out[k] = '\0';
	return out;
}

static int parse(const char *doc, Config **c, char *err, size_t errlen)
{
	const char *js = dq(doc);

	return config_parse(js, strlen(js), c, err, errlen);
}

#define MINJOBS "'jobs':{'echo':{'builtin':'echo'}}"

TEST(spec_example_parses)
{
	const char *doc =
		"{'listen':'0.0.0.0:9090','data_dir':'/var/lib/jg',"
		"'tokens':[{'name':'ci','token':'s3cret'},"
		"{'name':'ops','token_sha256':"
		"'2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b',"
		"'jobs':['echo']}],"
		"'jobs':{'echo':{'builtin':'echo'},"
		"'build':{'command':['/usr/bin/make','-C','/srv/app'],'timeout_s':600,"
		"'concurrency':1,'max_attempts':3,'backoff_s':2,"
		"'hmac_secret':'from-github','hmac_header':'X-Hub-Signature-256'}},"
		"'limits':{'max_payload_bytes':1048576,'max_result_bytes':65536,'max_wait_s':60,"
		"'max_running':8,'queue_max':100,'map_size_mb':64}}";
	Config *c = NULL;
	char err[256];
	const JgJob *j;

	CHECK_RC(parse(doc, &c, err, sizeof err));
	CHECK(strcmp(c->listen_host, "0.0.0.0") == 0 && c->listen_port == 9090);
	CHECK(strcmp(c->data_dir, "/var/lib/jg") == 0);
	CHECK(c->njobs == 2 && c->ntokens == 2);
	j = config_job(c, "build", 5);
	CHECK(j && !j->builtin_echo && j->argc == 3 && j->argv[3] == NULL);
	CHECK(strcmp(j->argv[0], "/usr/bin/make") == 0 && strcmp(j->argv[2], "/srv/app") == 0);
	CHECK(j->timeout_s == 600 && j->concurrency == 1 && j->max_attempts == 3 &&
	      j->backoff_s == 2);
	CHECK(j->hmac_secret_len == 11 && memcmp(j->hmac_secret, "from-github", 11) == 0);
	CHECK(strcmp(j->hmac_header, "X-Hub-Signature-256") == 0);
	j = config_job(c, "echo", 4);
	CHECK(j && j->builtin_echo && j->argv == NULL && j->hmac_secret == NULL);
	CHECK(config_job(c, "ech", 3) == NULL && config_job(c, "echoo", 5) == NULL);
	CHECK(c->max_payload_bytes == 1048576 && c->max_result_bytes == 65536 &&
	      c->max_wait_s == 60 && c->max_running == 8 && c->queue_max == 100 &&
	      c->map_size_mb == 64);
	CHECK(config_auth(c, "s3cret", 6) == &c->tokens[0]);
	config_free(c);
}

/* The largest limits that fit a 2 MiB map are taken (an integration test
 * posts a payload of the largest size a 3 MiB map takes). */
TEST(limits_that_fit_the_map)
{
	Config *c = NULL;
	char err[256];

	CHECK_RC(parse("{" MINJOBS ",'limits':{'map_size_mb':2,'max_result_bytes':163840,"
		       "'max_payload_bytes':917504}}", &c, err, sizeof err));
	CHECK(c->max_result_bytes == 163840 && c->max_payload_bytes == 917504);
	config_free(c);
}

TEST(defaults_fill_in)
{
	Config *c = NULL;
	char err[256];
	const JgJob *j;

	CHECK_RC(parse("{'jobs':{'x':{'command':['true']},'h':{'builtin':'echo',"
		       "'hmac_secret':'k'}}}", &c, err, sizeof err));
	CHECK(strcmp(c->listen_host, "127.0.0.1") == 0 && c->listen_port == 8080);
	CHECK(strcmp(c->data_dir, "./data") == 0);
	CHECK(c->ntokens == 0 && c->tokens == NULL);
	CHECK(c->max_payload_bytes == 1 << 20 && c->max_result_bytes == 64 << 10);
	CHECK(c->max_wait_s == 60 && c->max_running == 64 && c->queue_max == 65536 &&
	      c->map_size_mb == 8192);
	j = config_job(c, "x", 1);
	CHECK(j->timeout_s == 600 && j->concurrency == 4 && j->max_attempts == 3 &&
	      j->backoff_s == 2 && j->hmac_header == NULL);
	CHECK(strcmp(j->argv[0], "true") == 0);	/* a name, resolved later */
	j = config_job(c, "h", 1);
	CHECK(strcmp(j->hmac_header, "X-Hub-Signature-256") == 0);	/* default */
	config_free(c);
}

TEST(embedded_default)
{
	Config *c = NULL;
	const JgJob *j;

	CHECK_RC(config_default(&c));
	CHECK(strcmp(c->listen_host, "127.0.0.1") == 0 && c->listen_port == 8080);
	CHECK(strcmp(c->data_dir, "./data") == 0);
	CHECK(c->njobs == 1 && c->ntokens == 0);
	j = config_job(c, "echo", 4);
	CHECK(j && j->builtin_echo && j->timeout_s == 600 && j->concurrency == 4 &&
	      j->max_attempts == 3 && j->backoff_s == 2);
	CHECK(c->max_wait_s == 60 && c->max_payload_bytes == 1 << 20);
	config_free(c);
	config_free(NULL);
}

/* Each document must fail with a message that starts with prefix. */
static const struct {
	const char *doc, *prefix;
} bad_docs[] = {
	{"", "config: invalid JSON"},
	{"{'jobs':{}", "config: invalid JSON"},
	{"[]", "config: expected an object"},
	{"{'jobs':{}}", "jobs: at least one job is required"},
	{"{'jobs':[]}", "jobs: expected an object"},
	{"{" MINJOBS ",'foo':1}", "foo: unknown key"},
	{"{" MINJOBS ",'listen':'a:1','listen':'b:2'}", "listen: duplicate key"},
	{"{" MINJOBS ",'listen':8080}", "listen: expected a string"},
	{"{" MINJOBS ",'listen':'localhost'}", "listen: expected HOST:PORT"},
	{"{" MINJOBS ",'listen':':80'}", "listen: expected HOST:PORT"},
	{"{" MINJOBS ",'listen':'h:65536'}", "listen: expected HOST:PORT"},
	{"{" MINJOBS ",'listen':'h:+80'}", "listen: expected HOST:PORT"},
	{"{" MINJOBS ",'listen':'h:'}", "listen: expected HOST:PORT"},
	{"{" MINJOBS ",'listen':'a b:80'}", "listen: expected HOST:PORT"},
	{"{" MINJOBS ",'listen':'::1:80'}", "listen: expected HOST:PORT"},
	{"{" MINJOBS ",'data_dir':''}", "data_dir: must not be empty"},
	{"{" MINJOBS ",'data_dir':null}", "data_dir: expected a string"},
	{"{" MINJOBS ",'data_dir':'a\\u0000b'}", "data_dir: must not contain NUL"},
	{"{" MINJOBS ",'limits':[]}", "limits: expected an object"},
	{"{" MINJOBS ",'limits':{'foo':1}}", "limits.foo: unknown key"},
	{"{" MINJOBS ",'limits':{'max_wait_s':0}}", "limits.max_wait_s: expected a positive integer"},
	{"{" MINJOBS ",'limits':{'max_wait_s':-1}}", "limits.max_wait_s: expected a positive integer"},
	{"{" MINJOBS ",'limits':{'max_wait_s':1.5}}", "limits.max_wait_s: expected a positive integer"},
	{"{" MINJOBS ",'limits':{'max_wait_s':'5'}}", "limits.max_wait_s: expected a positive integer"},
	{"{" MINJOBS ",'limits':{'max_wait_s':1e2}}", "limits.max_wait_s: expected a positive integer"},
	{"{" MINJOBS ",'limits':{'max_wait_s':3601}}", "limits.max_wait_s: must be at most 3600"},
	{"{" MINJOBS ",'limits':{'max_payload_bytes':99999999999999999999}}",
	 "limits.max_payload_bytes: must be at most 67108864"},
	{"{" MINJOBS ",'limits':{'max_payload_bytes':1073741825}}",
	 "limits.max_payload_bytes: must be at most"},
	{"{" MINJOBS ",'limits':{'max_result_bytes':0}}", "limits.max_result_bytes:"},
	{"{" MINJOBS ",'limits':{'max_running':0}}", "limits.max_running:"},
	{"{" MINJOBS ",'limits':{'queue_max':0}}", "limits.queue_max:"},
	{"{" MINJOBS ",'limits':{'map_size_mb':true}}", "limits.map_size_mb:"},
	/* one event must fit in half the map (a result escaped: 6 bytes a byte) */
	{"{" MINJOBS ",'limits':{'map_size_mb':2,'max_payload_bytes':65536,'max_result_bytes':8000000}}",
	 "limits.max_result_bytes: 8000000 bytes (up to 6 times that once escaped in its "
	 "event) cannot fit in half of the log's map (limits.map_size_mb 2): at most 163840, "
	 "or a bigger map"},
	{"{" MINJOBS ",'limits':{'map_size_mb':2,'max_payload_bytes':65536,'max_result_bytes':163841}}",
	 "limits.max_result_bytes: 163841 bytes"},
	{"{" MINJOBS ",'limits':{'map_size_mb':1}}",
	 "limits.max_payload_bytes: 1048576 bytes cannot be taken into the log's map "
	 "(limits.map_size_mb 1): at most 425984, or a bigger map"},
	{"{" MINJOBS ",'limits':{'map_size_mb':3,'max_payload_bytes':1409025}}",
	 "limits.max_payload_bytes: 1409025 bytes"},
	{"{" MINJOBS ",'limits':{'queue_max':1,'queue_max':2}}", "limits.queue_max: duplicate key"},
	{"{'jobs':{'e':{'builtin':'echo'},'e':{'builtin':'echo'}}}", "jobs.e: duplicate key"},
	{"{'jobs':{'bad name':{'builtin':'echo'}}}", "jobs: bad job name \"bad name\""},
	{"{'jobs':{'':{'builtin':'echo'}}}", "jobs: bad job name"},
	{"{'jobs':{'..':{'builtin':'echo'}}}", "jobs: bad job name \"..\": use 1-64 of A-Z a-z 0-9 _ . - (not . or ..)"},
	{"\xef\xbb\xbf{" MINJOBS "}", "config: the file starts with a UTF-8 byte order mark"},
	/* the position names the character that breaks it */
	{"{'a':1 2}", "config: invalid JSON at line 1, column 8"},
	{"{\n 'listen': 'x'\n 'jobs': {}}", "config: invalid JSON at line 3, column 2"},
	/* Key paths show the file's text, UTF-8 included, escapes as written. */
	{"{" MINJOBS ",'t\xc3\xb6kens':1}", "t\xc3\xb6kens: unknown key"},
	/* a C1 control (U+009B) and a bidi override (U+202E) are escaped */
	{"{" MINJOBS ",'a\xc2\x9b\xe2\x80\xae" "b':1}", "a\\xc2\\x9b\\xe2\\x80\\xaeb: unknown key"},
	{"{'jobs':{'\xe6\x97\xa5\\u0001':{'builtin':'echo'}}}", "jobs: bad job name \"\xe6\x97\xa5\\u0001\""},
	{"{'jobs':{'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa':"
	 "{'builtin':'echo'}}}", "jobs: bad job name"},
	{"{'jobs':{'x':1}}", "jobs.x: expected an object"},
	{"{'jobs':{'x':{}}}", "jobs.x: exactly one of builtin or command"},
	{"{'jobs':{'x':{'builtin':'echo','command':['/bin/true']}}}",
	 "jobs.x: exactly one of builtin or command"},
	{"{'jobs':{'x':{'builtin':'cat'}}}", "jobs.x.builtin: unknown builtin \"cat\""},
	{"{'jobs':{'x':{'builtin':1}}}", "jobs.x.builtin: expected a string"},
	{"{'jobs':{'x':{'command':'/bin/true'}}}", "jobs.x.command: expected an array"},
	{"{'jobs':{'x':{'command':[]}}}", "jobs.x.command: expected a non-empty array"},
	{"{'jobs':{'x':{'command':['']}}}", "jobs.x.command[0]: must not be empty"},
	{"{'jobs':{'x':{'command':['/bin/echo',1]}}}", "jobs.x.command[1]: expected a string"},
	{"{'jobs':{'x':{'command':['bin/tool']}}}", "jobs.x.command[0]: expected an absolute path"},
	{"{'jobs':{'x':{'command':['./tool']}}}", "jobs.x.command[0]: expected an absolute path"},
	{"{'jobs':{'x':{'command':['/bin/echo','a\\u0000']}}}", "jobs.x.command[1]: must not contain NUL"},
	{"{'jobs':{'build':{'command':['/bin/true'],'timeout_s':0}}}",
	 "jobs.build.timeout_s: expected a positive integer"},
	{"{'jobs':{'build':{'command':['/bin/true'],'timeout_s':'600'}}}",
	 "jobs.build.timeout_s: expected a positive integer"},
	{"{'jobs':{'build':{'command':['/bin/true'],'timeout_s':604801}}}",
	 "jobs.build.timeout_s: must be at most 604800"},
	{"{'jobs':{'x':{'builtin':'echo','concurrency':0}}}", "jobs.x.concurrency: expected a positive"},
	{"{'jobs':{'x':{'builtin':'echo','concurrency':1025}}}", "jobs.x.concurrency: must be at most"},
	{"{'jobs':{'x':{'builtin':'echo','max_attempts':-3}}}", "jobs.x.max_attempts: expected a positive"},
	{"{'jobs':{'x':{'builtin':'echo','backoff_s':null}}}", "jobs.x.backoff_s: expected a positive"},
	{"{'jobs':{'x':{'builtin':'echo','hmac_secret':''}}}", "jobs.x.hmac_secret: must not be empty"},
	{"{'jobs':{'x':{'builtin':'echo','hmac_secret':5}}}", "jobs.x.hmac_secret: expected a string"},
	{"{'jobs':{'x':{'builtin':'echo','hmac_header':'X-Sig'}}}", "jobs.x.hmac_header: requires hmac_secret"},
	{"{'jobs':{'x':{'builtin':'echo','hmac_secret':'k','hmac_header':'X Sig'}}}",
	 "jobs.x.hmac_header: expected an HTTP header name"},
	{"{'jobs':{'x':{'builtin':'echo','hmac_secret':'k','hmac_header':'Upgrade'}}}",
	 "jobs.x.hmac_header: Upgrade frames or routes the request"},
	{"{'jobs':{'x':{'builtin':'echo','hmac_secret':'k','hmac_header':'content-length'}}}",
	 "jobs.x.hmac_header: content-length frames or routes the request"},
	{"{" MINJOBS ",'tokens':[{'name':'a','token':'"
	 "tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt"
	 "tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt'}]}",
	 "tokens[0].token: must be 1 to 256 bytes"},
	{"{'jobs':{'x':{'builtin':'echo','retries':1}}}", "jobs.x.retries: unknown key"},
	{"{'jobs':{'x':{'builtin':'echo','builtin':'echo'}}}", "jobs.x.builtin: duplicate key"},
	{"{" MINJOBS ",'tokens':{}}", "tokens: expected an array"},
	{"{" MINJOBS ",'tokens':['abc']}", "tokens[0]: expected an object"},
	{"{" MINJOBS ",'tokens':[{'token':'t'}]}", "tokens[0].name: required"},
	{"{" MINJOBS ",'tokens':[{'name':'a'}]}", "tokens[0]: exactly one of token or token_sha256"},
	{"{" MINJOBS ",'tokens':[{'name':'a','token':'t','token_sha256':"
	 "'2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b'}]}",
	 "tokens[0]: exactly one of token or token_sha256"},
	{"{" MINJOBS ",'tokens':[{'name':'a','token':'t'},{'name':'b','token_sha256':'abc'}]}",
	 "tokens[1].token_sha256: expected 64 hex digits"},
	{"{" MINJOBS ",'tokens':[{'name':'a','token_sha256':"
	 "'2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25g'}]}",
	 "tokens[0].token_sha256: expected 64 hex digits"},
	{"{" MINJOBS ",'tokens':[{'name':'a','token_sha256':1}]}",
	 "tokens[0].token_sha256: expected 64 hex digits"},
	{"{" MINJOBS ",'tokens':[{'name':'a','token':''}]}", "tokens[0].token: must not be empty"},
	{"{" MINJOBS ",'tokens':[{'name':'a','token':7}]}", "tokens[0].token: expected a string"},
	{"{" MINJOBS ",'tokens':[{'name':'a','token':'x'},{'name':'a','token':'y'}]}",
	 "tokens[1].name: duplicate token name \"a\""},
	{"{" MINJOBS ",'tokens':[{'name':'a/b','token':'x'}]}", "tokens[0].name: bad token name"},
	{"{" MINJOBS ",'tokens':[{'name':'a','token':'x','role':'admin'}]}", "tokens[0].role: unknown key"},
	{"{" MINJOBS ",'tokens':[{'name':'a','token':'x','token':'y'}]}", "tokens[0].token: duplicate key"},
	{"{" MINJOBS ",'tokens':[{'name':'a','token':'x','jobs':'echo'}]}", "tokens[0].jobs: expected an array"},
	{"{" MINJOBS ",'tokens':[{'name':'a','token':'x','jobs':['echo','nope']}]}",
	 "tokens[0].jobs[1]: unknown job \"nope\""},
	{"{" MINJOBS ",'tokens':[{'name':'a','token':'x','jobs':[1]}]}", "tokens[0].jobs[0]: expected a string"},
	{"{" MINJOBS ",'tokens':[{'name':'a','token':'x','jobs':['echo','echo']}]}",
	 "tokens[0].jobs[1]: job \"echo\" is listed twice"},
	{"{'jobs':{'build':{'command':['/bin/true'],'timeout_s':99999999999999999999999}}}",
	 "jobs.build.timeout_s: must be at most 604800"},
	{"{'jobs':{'build':{'command':['/bin/true'],'timeout_s':9223372036854775807}}}",
	 "jobs.build.timeout_s: must be at most 604800"},
	{"{'tokens':[{'name':'a','token':'x','jobs':['nope']}]}", "tokens[0].jobs[0]: unknown job \"nope\""},
	{"{'bogus':1}", "bogus: unknown key"},
	{"{" MINJOBS ",'tokens':[{'name':'a','token':'x'},{'name':'b','token':'x'}]}",
	 "tokens[1]: same secret as tokens[0]"},
	{"{" MINJOBS ",'limits':{'max_wait_s':5},'limits':{}}", "limits: duplicate key"},
	{"{" MINJOBS ",'Listen':'h:1'}", "Listen: unknown key"},
	{"{" MINJOBS ",'a\\nb':1}", "a\\nb: unknown key"},	/* raw text shown */
};

/* A file without "jobs" serves the embedded echo job. */
TEST(missing_jobs_means_builtin_echo)
{
	const char doc[] = "{\"tokens\":[{\"name\":\"a\",\"token\":\"x\",\"jobs\":[\"echo\"]}]}";
	char err[256];
	Config *c;
	const JgJob *j;

	CHECK_RC(config_parse(doc, sizeof doc - 1, &c, err, sizeof err));
	CHECK(c->njobs == 1);
	j = config_job(c, "echo", 4);
	CHECK(j && j->builtin_echo && j->max_attempts == 3);
	config_free(c);
	CHECK_RC(config_parse("{}", 2, &c, err, sizeof err));
	CHECK(c->njobs == 1);
	config_free(c);
}

TEST(every_error_names_its_path)
{
	size_t k;

	for (k = 0; k < sizeof bad_docs / sizeof bad_docs[0]; k++) {
		Config *c = (Config *)1;
		char err[256] = "";
		int rc = parse(bad_docs[k].doc, &c, err, sizeof err);
		if (rc != JG_EINVAL || strncmp(err, bad_docs[k].prefix,
					       strlen(bad_docs[k].prefix)) != 0)
			fprintf(stderr, "doc %s\n  rc %d err \"%s\"\n  want \"%s\"\n",
				dq(bad_docs[k].doc), rc, err, bad_docs[k].prefix);
		CHECK(rc == JG_EINVAL);
		CHECK(c == NULL);
		CHECK(strncmp(err, bad_docs[k].prefix, strlen(bad_docs[k].prefix)) == 0);
	}
}

/* Valid JSON nested too deep is named as such, not as invalid JSON. */
TEST(deep_nesting_is_named)
{
	size_t depth = 100000, n = 2 * depth;
	char *js = malloc(n), err[256];
	Config *c = NULL;

	CHECK(js != NULL);
	memset(js, '[', depth);
	memset(js + depth, ']', depth);
	CHECK(config_parse(js, n, &c, err, sizeof err) == JG_EINVAL && c == NULL);
	CHECK(strstr(err, "config: JSON nested deeper than 512 levels at line 1, column 513") != NULL);
	free(js);
}

TEST(small_err_buffers_are_safe)
{
	Config *c;
	char err[8];

	CHECK(parse("{'jobs':{'x':{}}}", &c, err, sizeof err) == JG_EINVAL);
	CHECK(strlen(err) == 7 && strncmp(err, "jobs.x:", 7) == 0);
	CHECK(parse("{'jobs':{'x':{}}}", &c, NULL, 0) == JG_EINVAL);
}

TEST(listen_forms)
{
	Config *c;

	CHECK_RC(config_default(&c));
	CHECK_RC(config_set_listen(c, "0.0.0.0:0"));
	CHECK(strcmp(c->listen_host, "0.0.0.0") == 0 && c->listen_port == 0);
	CHECK_RC(config_set_listen(c, "[::1]:8443"));
	CHECK(strcmp(c->listen_host, "::1") == 0 && c->listen_port == 8443);
	CHECK_RC(config_set_listen(c, "example.org:65535"));
	CHECK(strcmp(c->listen_host, "example.org") == 0 && c->listen_port == 65535);
	CHECK(config_set_listen(c, "[::1]8443") == JG_EINVAL);
	CHECK(config_set_listen(c, "[]:80") == JG_EINVAL);
	CHECK(config_set_listen(c, "h:080000") == JG_EINVAL);
	CHECK(config_set_listen(c, "h:-1") == JG_EINVAL);
	CHECK(config_set_listen(c, "") == JG_EINVAL);
	CHECK(config_set_listen(c, NULL) == JG_EINVAL);
	/* A failed set leaves the previous value. */
	CHECK(strcmp(c->listen_host, "example.org") == 0 && c->listen_port == 65535);
	config_free(c);
}

TEST(names)
{
	char long65[66];

	CHECK(config_name_ok("echo", 4));
	CHECK(config_name_ok("A-z_0.9", 7));
	CHECK(config_name_ok("...", 3));
	CHECK(!config_name_ok("", 0));
	CHECK(!config_name_ok(".", 1));
	CHECK(!config_name_ok("..", 2));
	CHECK(!config_name_ok("a b", 3));
	CHECK(!config_name_ok("a/b", 3));
	CHECK(!config_name_ok("\xc3\xa9", 2));
	CHECK(!config_name_ok("a\0b", 3));
	memset(long65, 'a', 65);
	CHECK(config_name_ok(long65, 64));
	CHECK(!config_name_ok(long65, 65));
}

TEST(tokens_are_hashed_and_authenticate)
{
	const char *doc =
		"{" MINJOBS ",'tokens':[{'name':'ci','token':'s3cret'},"
		"{'name':'ops','token_sha256':"
		"'2BB80D537B1DA3E38BD30361AA855686BDE0EACD7162FEF6A25FE97BF527A25B'}]}";
	unsigned char d[32];
	Config *c;
	char err[256];

	CHECK_RC(parse(doc, &c, err, sizeof err));
	SHA256((const unsigned char *)"s3cret", 6, d);
	CHECK(memcmp(c->tokens[0].sha256, d, 32) == 0);
	/* The uppercase hex above is sha256("secret"). */
	CHECK(config_auth(c, "secret", 6) == &c->tokens[1]);
	CHECK(config_auth(c, "s3cret", 6) == &c->tokens[0]);
	CHECK(config_auth(c, "s3cre", 5) == NULL);
	CHECK(config_auth(c, "s3cretX", 6) == &c->tokens[0]);	/* length-bounded */
	CHECK(config_auth(c, "", 0) == NULL);
	CHECK(config_auth(c, NULL, 0) == NULL);
	CHECK(config_auth(c, "S3CRET", 6) == NULL);
	config_free(c);
}

TEST(plaintext_not_kept)
{
	const char *doc = "{" MINJOBS ",'tokens':[{'name':'ci','token':'plain-needle-xyz'}]}";
	Config *c;
	char err[256];
	int k;

	CHECK_RC(parse(doc, &c, err, sizeof err));
	for (k = 0; k < c->ntokens; k++)
		CHECK(memmem(&c->tokens[k], sizeof c->tokens[k], "plain-needle", 12) == NULL);
	CHECK(config_auth(c, "plain-needle-xyz", 16) != NULL);
	config_free(c);
}

TEST(add_token)
{
	Config *c;
	const JgToken *t;

	CHECK_RC(config_default(&c));
	CHECK(config_auth(c, "tok", 3) == NULL);
	CHECK_RC(config_add_token(c, "env", "tok"));
	CHECK_RC(config_add_token(c, "generated", "other"));
	CHECK(c->ntokens == 2);
	t = config_auth(c, "tok", 3);
	CHECK(t && strcmp(t->name, "env") == 0 && t->jobs == NULL);
	t = config_auth(c, "other", 5);
	CHECK(t && strcmp(t->name, "generated") == 0);
	CHECK(config_add_token(c, "env", "again") == JG_EINVAL);	/* duplicate */
	CHECK(config_add_token(c, "bad name", "x") == JG_EINVAL);
	CHECK(config_add_token(c, "empty", "") == JG_EINVAL);
	CHECK(c->ntokens == 2);
	config_free(c);
}

TEST(token_job_lists)
{
	const char *doc =
		"{'jobs':{'echo':{'builtin':'echo'},'build':{'command':['/bin/true']}},"
		"'tokens':[{'name':'all','token':'a'},"
		"{'name':'some','token':'b','jobs':['build']},"
		"{'name':'none','token':'c','jobs':[]}]}";
	const JgToken *all, *some, *none;
	Config *c;
	char err[256];

	CHECK_RC(parse(doc, &c, err, sizeof err));
	all = config_auth(c, "a", 1);
	some = config_auth(c, "b", 1);
	none = config_auth(c, "c", 1);
	CHECK(all && some && none);
	CHECK(config_token_allows(all, "echo") && config_token_allows(all, "build"));
	CHECK(!config_token_allows(some, "echo") && config_token_allows(some, "build"));
	CHECK(some->njobs == 1 && strcmp(some->jobs[0], "build") == 0);
	CHECK(none->jobs != NULL && none->njobs == 0);
	CHECK(!config_token_allows(none, "echo") && !config_token_allows(none, "build"));
	CHECK(!config_token_allows(NULL, "echo"));
	config_free(c);
}

TEST(escaped_keys_are_decoded)
{
	Config *c;
	char err[256];

	CHECK_RC(parse("{'j\\u006fbs':{'echo':{'b\\u0075iltin':'\\u0065cho'}}}", &c, err,
		       sizeof err));
	CHECK(config_job(c, "echo", 4) != NULL);
	config_free(c);
}

static void write_file(const char *path, const char *s)
{
	int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);

	CHECK(fd >= 0);
	CHECK(write(fd, s, strlen(s)) == (ssize_t)strlen(s));
	close(fd);
}

TEST(load_from_file)
{
	char path[300], err[256];
	Config *c = NULL;

	snprintf(path, sizeof path, "%s/jobgate.json", t_dir());
	write_file(path, dq("{'listen':'127.0.0.1:0'," MINJOBS "}\n"));
	CHECK_RC(config_load(path, &c, err, sizeof err));
	CHECK(c->listen_port == 0 && c->njobs == 1);
	config_free(c);

	write_file(path, dq("{'jobs':{'x':{'builtin':'echo','timeout_s':0}}}"));
	CHECK(config_load(path, &c, err, sizeof err) == JG_EINVAL && c == NULL);
	CHECK(strncmp(err, "jobs.x.timeout_s: ", 18) == 0);

	snprintf(path, sizeof path, "%s/missing.json", t_dir());
	CHECK(config_load(path, &c, err, sizeof err) == ENOENT && c == NULL);
	CHECK(strncmp(err, path, strlen(path)) == 0 && strstr(err, "No such file"));
}

TEST(load_refuses_huge_file)
{
	char path[300], err[256];
	Config *c = NULL;
	int fd;

	snprintf(path, sizeof path, "%s/big.json", t_dir());
	fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	CHECK(fd >= 0 && ftruncate(fd, (2 << 20)) == 0);
	close(fd);
	CHECK(config_load(path, &c, err, sizeof err) == EFBIG && c == NULL);
	CHECK(strstr(err, "too large") != NULL);
}

int main(void)
{
	RUN(spec_example_parses);
	RUN(defaults_fill_in);
	RUN(limits_that_fit_the_map);
	RUN(embedded_default);
	RUN(missing_jobs_means_builtin_echo);
	RUN(every_error_names_its_path);
	RUN(deep_nesting_is_named);
	RUN(small_err_buffers_are_safe);
	RUN(listen_forms);
	RUN(names);
	RUN(tokens_are_hashed_and_authenticate);
	RUN(plaintext_not_kept);
	RUN(add_token);
	RUN(token_job_lists);
	RUN(escaped_keys_are_decoded);
	RUN(load_from_file);
	RUN(load_refuses_huge_file);
	return t_done();
}
