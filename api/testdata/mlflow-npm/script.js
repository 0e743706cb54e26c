// Drives Maestro's MLflow API with the npm `mlflow` client (2.0.7), as a
// user would: experiment -> run -> params -> metrics -> batch -> history ->
// search -> finish. api/mlflow_npm_test.go starts Maestro, then runs
//
//   MLFLOW_ENDPOINT=http://host/mlflow/<project> MLFLOW_TOKEN=mae_... \
//   RESULT_FILE=out.json node script.js
//
// and checks the results written to RESULT_FILE (the client logs every
// POST body to stdout, so stdout is not the place for them). Any step that
// fails ends the script with exit code 1 and the error on stderr.
'use strict'

const fs = require('fs')
const MLflow = require('mlflow')
const { RunStatus, ViewType } = require('mlflow/enum')

async function main () {
  const endpoint = process.env.MLFLOW_ENDPOINT
  const token = process.env.MLFLOW_TOKEN
  if (!endpoint || !token || !process.env.RESULT_FILE) {
    throw new Error('set MLFLOW_ENDPOINT, MLFLOW_TOKEN and RESULT_FILE')
  }
  const client = new MLflow({ endpoint, headers: { Authorization: `Bearer ${token}` } })
  const out = {}

  // Experiment: create, read, list (MLflow 1.x's endpoint), tag (the
  // client's path lacks a slash; Maestro serves it), rename.
  const { experiment_id } = await client.Experiments.create({ name: 'npm-demo' })
  out.experiment_id = experiment_id
  out.experiment = (await client.Experiments.get({ experiment_id })).experiment
  out.listed = (await client.Experiments.list({ view_type: ViewType.ALL })).experiments.map(x => x.name)
  await client.Experiments.setExperimentTag({ experiment_id, key: 'team', value: 'risk' })
  await client.Experiments.update({ experiment_id, new_name: 'npm-demo-renamed' })
  out.renamed = (await client.Experiments.get({ experiment_id })).experiment

  // A refusal: the client rejects with MLflow's error body inside.
  try {
    await client.Experiments.create({ name: 'npm-demo-renamed' })
    out.duplicate = 'accepted'
  } catch (e) {
    out.duplicate = JSON.parse(String(e.message).replace(/^Error: /, ''))
  }

  // Run: create (the client sends no run_name; the tag names it).
  const start = 1700000000000
  const { run } = await client.Runs.create({
    experiment_id, user_id: 'ana', start_time: start,
    tags: [{ key: 'mlflow.runName', value: 'first' }, { key: 'mlflow.source.type', value: 'LOCAL' }]
  })
  const run_id = run.info.run_id
  out.created = run

  // Params, metrics (NaN reaches the server as null), a batch, tags.
  await client.Runs.logParameter({ run_id, key: 'lr', value: '0.1' })
  await client.Runs.logMetric({ run_id, key: 'loss', value: 0.5, timestamp: start + 1, step: 1 })
  await client.Runs.logMetric({ run_id, key: 'loss', value: NaN, timestamp: start + 2, step: 2 })
  await client.Runs.logBatch({
    run_id,
    metrics: [{ key: 'loss', value: 0.25, timestamp: start + 3, step: 3 }, { key: 'acc', value: 0.9, timestamp: start + 3, step: 3 }],
    params: [{ key: 'epochs', value: '10' }],
    tags: [{ key: 'stage', value: 'train' }, { key: 'tmp', value: 'x' }]
  })
  await client.Runs.setTag({ run_id, key: 'stage', value: 'eval' })
  await client.Runs.deleteTag({ run_id, key: 'tmp' })

  out.history = (await client.Metrics.getHistory({ run_id, metric_key: 'loss' })).metrics
  out.search = (await client.Runs.search({
    experiment_ids: [experiment_id],
    filter: "params.lr = '0.1' and metrics.loss < 1",
    run_view_type: ViewType.ACTIVE_ONLY,
    max_results: 10,
    order_by: ['metrics.loss ASC']
  })).runs || []

  // Finish, and read the run back.
  out.updated = (await client.Runs.update({ run_id, status: RunStatus.FINISHED, end_time: start + 60000 })).run_info
  out.run = (await client.Runs.get({ run_id })).run

  // Delete and restore a second run.
  const second = (await client.Runs.create({ experiment_id, user_id: 'ana', start_time: start + 5 })).run.info.run_id
  await client.Runs.delete({ run_id: second })
  out.deleted = (await client.Runs.get({ run_id: second })).run.info.lifecycle_stage
  await client.Runs.restore({ run_id: second })
  out.restored = (await client.Runs.get({ run_id: second })).run.info.lifecycle_stage

  fs.writeFileSync(process.env.RESULT_FILE, JSON.stringify(out, null, 2))
}

main().catch(err => {
  console.error(err && err.stack ? err.stack : String(err))
  process.exit(1)
})
