/**
 * The help texts of `hub-session` and its commands.
 *
 * @module
 */

/** The overall usage. */
export const USAGE = `hub-session <command> [options]

Train against a HUB, or run one. Commands:
  serve                   run the local HUB server
  demo                    a real tiny training against the embedded local HUB
  sync                    deliver what offline or crashed sessions left in the journal
  upload MODEL_ID FILE    upload final weights with a progress bar
  model MODEL_ID          print a model's document as JSON
  migrate                 copy a data directory's HUB into PostgreSQL + S3

Options:
  -h, --help              show this help (or a command's: hub-session <command> --help)
  --version               print the version

Commands that talk to a HUB take --hub URL (default: $ULTRALYTICS_HUB_API,
else http://127.0.0.1:8080) and read the API key from $HUB_API_KEY or a file
given with --api-key-file (else the Ultralytics settings file).
Exit codes: 0 ok, 1 failure, 2 wrong usage.`;

const KEY_OPTIONS =
  `  --api-key-file FILE     read the API key from FILE (default: $HUB_API_KEY,
                          else the Ultralytics settings file)
  --key KEY               API key as an argument: visible in ps, avoid it`;

const HUB_OPTIONS =
  `  --hub URL               API root of the HUB (default: $ULTRALYTICS_HUB_API,
                          else http://127.0.0.1:8080)
${KEY_OPTIONS}`;

/** The help of each command. */
export const HELP: Readonly<Record<string, string>> = {
  serve: `hub-session serve [options]

Runs the local HUB server (HUB v1 wire protocol) until SIGINT or SIGTERM.
With a key (from $HUB_API_KEY or --api-key-file) only requests carrying it
are accepted; without one, every request is.

Options:
  --port N                port to listen on; 0 picks a free one (default: 8080)
  --hostname HOST         interface to listen on (default: 127.0.0.1)
  --data DIR              data directory (default: ./.hub-data)
  --database URL          keep models and metrics in PostgreSQL,
                          postgres://USER@HOST[:PORT]/DB (default:
                          $HUB_DATABASE_URL, else the data directory); the
                          password only from $HUB_DATABASE_URL or $PGPASSWORD
  --weights WHERE         keep weights in s3://BUCKET[/PREFIX] or a directory
                          (default: $HUB_WEIGHTS_URL, else the data directory);
                          S3 from $AWS_ENDPOINT_URL, $AWS_ACCESS_KEY_ID,
                          $AWS_SECRET_ACCESS_KEY, $AWS_REGION
  --api-key-file FILE     accept the keys in FILE, one per line
                          (default: $HUB_API_KEY, else accept every request)
  --api-key KEY           accept KEY (repeatable): visible in ps, avoid it
  --public-url URL        base URL clients reach the HUB at (behind a proxy);
                          an open HUB also answers its host name
  --allowed-host NAME     another host name an open HUB (no key) answers;
                          repeatable (loopback names and IP addresses are
                          always answered)
  -h, --help              show this help

Several processes may serve one HUB from the same database and weights.`,
  migrate: `hub-session migrate --database URL --weights WHERE [--data DIR]

Copies the HUB kept in a data directory (the file store of serve --data) into
PostgreSQL and S3 (or another directory), for several server processes to
serve: every model with its id, document and metrics, every weights file
checked by sha256, each model's epoch count compared. The data directory is
left unchanged; running it again copies only what is missing.

Options:
  --data DIR              the data directory to copy (default: ./.hub-data)
  --database URL          target PostgreSQL, postgres://USER@HOST[:PORT]/DB
                          (default: $HUB_DATABASE_URL); the password only from
                          $HUB_DATABASE_URL or $PGPASSWORD
  --weights WHERE         target s3://BUCKET[/PREFIX] or directory (default:
                          $HUB_WEIGHTS_URL); S3 from $AWS_ENDPOINT_URL,
                          $AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY, $AWS_REGION
  -h, --help              show this help`,
  demo: `hub-session demo [options]

Starts the embedded local HUB on a free port (data under --dir), creates a
model, trains a small network in pure TypeScript, sends every epoch's metrics,
uploads checkpoints and the final weights, and prints a summary read back
from the HUB. Exits 1 unless every epoch is stored and the sha256 matches.

Options:
  --epochs N              epochs to train (default: 20)
  --dir DIR               data, journal and local weights (default: ./.hub-data)
  --hub URL               train against this HUB instead of the embedded one
${KEY_OPTIONS}
  -h, --help              show this help`,
  sync: `hub-session sync [options]

Delivers what sessions left in the journal (offline work, or a trainer that
died before the server acknowledged everything): metrics, the last checkpoint
and the final weights. Journals are found by the HUB's address, and by its
instance id when the same HUB came back on another address. Running it again
changes nothing. Exits 1 when --model has nothing in the journal.

Runs reported to the Ultralytics Platform (ul:// sessions) are delivered with
--platform-url, or without --hub when $ULTRALYTICS_PLATFORM_URL or
$PLATFORM_API_URL is set; their key comes from $ULTRALYTICS_API_KEY (or
--api-key-file), never from $HUB_API_KEY.

Options:
${HUB_OPTIONS}
  --platform-url URL      deliver the journals of Platform runs to this
                          Platform base URL instead of a HUB (default:
                          $ULTRALYTICS_PLATFORM_URL; webhooks at
                          $PLATFORM_API_URL when set, else URL/api/webhooks)
  --journal DIR           journal root (default: the OS cache directory's
                          hub-session/journal)
  --model ID              deliver only this model (default: every model of --hub)
  -h, --help              show this help`,
  upload: `hub-session upload MODEL_ID FILE [options]

Uploads FILE as the final weights (best.pt) of the model, with a progress bar
on a terminal (progress lines otherwise), retrying network failures; prints
the size and the sha256 the HUB verified.

Options:
${HUB_OPTIONS}
  --map X                 final mAP, a number (default: 0)
  --epoch N               epoch of the weights (default: the model's last
                          stored epoch, else 0)
  -h, --help              show this help`,
  model: `hub-session model MODEL_ID [options]

Prints the model's document as JSON.

Options:
${HUB_OPTIONS}
  -h, --help              show this help`,
};
