"""The launcher: pccheck-submit and the job wrapper. Runs any command under the contract of docs/jobs.md
(pccheck.contract) and knows nothing else of the code it runs."""
