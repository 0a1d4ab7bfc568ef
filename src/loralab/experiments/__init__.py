"""What studies and searches share: their file rules (:mod:`.options`) and the search file
(:mod:`.search`, also the ``tune:`` key of a study), run identity (:mod:`.identity`), the study
folder with its locks and staging (:mod:`.folder`), how a training process is started
(:mod:`.launch`) and the Ray submit/wait/land loop (:mod:`.ray`)."""
