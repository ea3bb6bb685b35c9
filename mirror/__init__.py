"""ctmirror: a change-tracking mirror of ClinicalTrials.gov."""
