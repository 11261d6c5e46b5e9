"""Synthetic linked cohort: the embedded default dataset (what ``make demo`` shows first).

``generate_cohort(n_stays, seed)`` returns an :class:`ehr.cohort.Cohort` whose ``events``,
``stays`` and ``cxr`` tables follow ``ehr/schema.py``: codes ``SYNTH/<concept>``, canonical
units, the ``concept`` column set, every value inside the plausible range of
``ehr/concepts.toml``. ``Cohort.save(dir)`` writes them with ``truth.parquet`` and
``cohort.json`` (n_stays, seed, version); ``Cohort.load(dir)`` reads them back. ``truth`` is the
generator's latent per-stay timeline (infection source and times, comorbidities, SOFA rise) for
tests and teaching; no model may read it. ``write_synthetic(dir, n, seed, partitions=P)`` streams
a cohort of any size into the partitioned layout a chunk of stays at a time
(:mod:`ehr.synthetic.stream`). Same ``(n_stays, seed, start)`` -> identical tables; 5,000 stays take ~2 s
(``benchmarks/synthetic_speed.py``).

Two sites: ``generate_cohort(n, seed, site="B")`` (``sepsiscope simulate --site B``) draws the same
kind of cohort from another hospital (``ehr.synthetic.plan.SITES``): more ICU (32 %) and surgical
stays, older patients (age ~69), more sepsis (~13.5 %), 2-hourly ward observations and labs and
blood gases about twice as often; its stays have ``source="synthetic-B"``. Site A, the default,
is what is described below, unchanged for a given seed.

How a stay is made (``plan`` -> ``physiology`` -> ``sampling`` / ``cxr``)
---------------------------------------------------------------------------
* Department ward 40 %, surgical ward 25 %, ICU 20 %, ED (acute admissions) 15 %; age ~64 (18-99),
  53 % male; length of stay right-skewed from 12 h to 20 days (2,000 stays ~ 160k stay-hours,
  ~145k hourly screens up to onset).
* Latent trajectory: infection (fever, tachycardia, tachypnoea) -> inflammatory labs (CRP, WBC,
  hours later) -> organ dysfunction ramp (MAP down / lactate up, creatinine up, bilirubin up,
  platelets down, P/F down, GCS down). Onset is Sepsis-3-like: the first time the SOFA-like score
  of the noise-free trend rises >= 2 above its value when infection starts (MAP-only
  cardiovascular score: no vasopressors are simulated). Septic prevalence ~9 % (8.7-9.2 % over
  10,000 stays), ~20 % in ICU.
* Confounders among non-septic stays: post-operative patients (transient tachycardia, mild
  fever, CRP rise, routine oxygen, post-op atelectasis), COPD patients with chronic SpO2 88-92 %
  and ``hypercapnic=True`` (NEWS2 scale 2), heart failure (fluid overload: low P/F, oxygen,
  oedema/effusion on CXR), CKD (high baseline creatinine), infections that never reach a SOFA
  rise of 2 (at most one organ, one SOFA point).
* Pneumonia is the source in ~45 % of septic stays (``stays.pneumonia``); its CXR is taken on
  respiratory symptoms and shows consolidation before CRP/WBC move and before onset.
* Outcomes: antibiotics usually at/after suspicion (in septic stays ~40 % early, the rest around
  onset), bloodstream infection in ~30 % of septic stays (more in non-pneumonia sources), death
  ~24 % septic vs ~3.5 % non-septic, onset setting by the 4-day rule from hospital admission
  (ICU stays often start after a ward stay: ``hospital_admit_time`` earlier).
* Sampling: vital-sign rounds every ~4 h on the ward (up to hourly as an early-warning proxy
  rises), ~hourly in ICU, 1.5 h in the ED; lab panels every 9-24 h (CRP on most ward panels:
  daily-ish); blood gases + lactate mainly once infection is suspected or organs fail (lactate is
  measured ~4x as often per day in septic stays: informative missingness); GCS mostly in ICU,
  ACVPU on the ward. MAP is (SBP + 2 DBP)/3 of the charted pressures; oxygen is titrated to a
  PaO2 target so on_o2 / o2_flow / fio2 / SpO2 agree (flow and FiO2 are charted while on oxygen
  and once, 0 L/min and 0.21, when weaned, so carried-forward values stay consistent).
* CXR studies on admission, post-op, on suspicion, at deterioration and as ICU follow-up, with
  ``truth_<finding>`` and *simulated* imaging-model probabilities ``cxr_<finding>`` (AUROC about
  0.8-0.93 against the truth) that stand in for a CNN until the imaging model scores real or
  procedural images; ``image_path`` is null.

Comparison with PhysioNet 2019 training set A
---------------------------------------------
``scripts/compare_synthetic.py`` (2,000 synthetic stays, seed 0, generator 1.0) prints, per
concept, median [IQR] and the % of hourly rows with a measurement. Main lines::

    concept  synthetic (all)     synthetic ICU      PhysioNet A         %h all / ICU / PN
    hr       89 [79-101]         88 [78-100]        84 [73-96]          43 / 82 / 92
    sbp      116 [104-128]       116 [103-127]      118 [105-134]       42 / 81 / 85
    map      81 [73-90]          81 [73-89]         77 [68-87]          31 / 78 / 90
    resp     18 [16-21]          18 [16-21]         18 [15-22]          40 / 78 / 90
    spo2     96 [95-97]          96 [96-97]         98 [96-99.5]        42 / 81 / 88
    temp     37.1 [36.7-37.7]    37.0 [36.7-37.6]   37.1 [36.6-37.5]    26 / 34 / 34
    fio2     0.25 [0.25-0.29]    0.25 [0.25-0.29]   0.50 [0.40-0.55]    16 / 35 / 14
    wbc      8.8 [6.9-11.8]      9.0 [6.9-12.7]     10.8 [8.0-14.3]     7.8 / 11 / 7.5
    plt      217 [167-268]       175 [131-225]      181 [127-247]       7.7 / 11 / 6.5
    bili     0.6 [0.4-0.8]       0.6 [0.4-0.8]      0.9 [0.5-2.2]       2.6 / 3.7 / 1.2
    crea     0.90 [0.77-1.11]    0.90 [0.77-1.15]   0.90 [0.70-1.40]    7.8 / 11 / 6.6
    bun      15 [12-19]          15 [11-20]         18 [12-29]          7.7 / 11 / 8.2
    lact     1.4 [1.1-2.1]       1.5 [1.1-2.6]      1.8 [1.2-2.8]       5.4 / 8.9 / 3.4
    hco3     24 [23-26]          24 [22-26]         24 [22-27]          9.2 / 13 / 8.1
    ph       7.38 [7.36-7.41]    7.38 [7.35-7.40]   7.39 [7.34-7.43]    4.9 / 7.6 / 12
    glucose  124 [105-152]       128 [108-157]      124 [104-150]       7.2 / 10 / 12
    hgb      11.1 [9.7-12.5]     10.2 [8.9-11.4]    10.4 [9.4-11.6]     7.7 / 11 / 8.8

    stays / septic         2,000 / 10.0 %      412 / 21.4 %         20,336 / 8.8 %
    LOS h median [IQR]     64 [39-94] (mean 82)  66 [42-101]        39 [25-47] (mean 39)
    age median [IQR]       64 [52-75]                                65 [52-76]
    onset h median [IQR]   41 [24-137]                               35.5 [14-79] (first label + 6 h)

How to read the differences: PhysioNet A is ICU-only, hourly-binned charting, so its vitals
cover ~90 % of hours; the synthetic hospital is mostly ward (4-hourly rounds), its ICU stays come
close (~80 %). Synthetic stays are longer (whole hospital episodes, not ICU stays) and include
hospital-onset sepsis late in the stay, hence the longer tail of onset hours. FiO2 is lower
because no mechanical ventilation is simulated (PhysioNet charts FiO2 mostly for ventilated
patients), and SpO2 is a little lower because oxygen is titrated to targets. Lactate is measured
somewhat more often (the cohort is meant to make its informative missingness visible). WBC, BUN
and bilirubin run lower than in an ICU population. Concepts only PhysioNet has (EtCO2, PaCO2,
SaO2, base excess, AST, ...) are not simulated; O2 therapy, GCS/ACVPU, CRP and albumin exist only
in the synthetic cohort.
"""

from ehr.synthetic.cohort import GENERATOR_VERSION, generate_cohort, synthetic_concepts
from ehr.synthetic.stream import generate_chunks, write_synthetic

__all__ = ["generate_cohort", "generate_chunks", "write_synthetic", "synthetic_concepts", "GENERATOR_VERSION"]
